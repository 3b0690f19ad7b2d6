"""Run a training job on local processes (the default of `mimo-run train`)."""

from typing import List

from mimo_runtime.launch.spawn import spawn
from mimo_runtime.topology import Topology
from mimo_runtime.train.loop import RankResult, RunConfig, plan_for, train_rank


def describe_ranks(topology: Topology, cfg: RunConfig):
    """rank -> 'module stage k' for failure messages."""
    plan = plan_for(topology, cfg)

    def describe(rank: int) -> str:
        parts = [f"{n} stage {plan.modules[n].coords(rank).pp}" for n in plan.modules_on(rank)]
        return ", ".join(parts) if parts else "no module"

    return describe


def launch_local(topology: Topology, cfg: RunConfig, timeout_s: float = 24 * 3600.0) -> List[RankResult]:
    return spawn(train_rank, cfg.nproc, args=(topology, cfg), timeout_s=timeout_s,
                 describe=describe_ranks(topology, cfg), collective_timeout_s=cfg.timeout_s,
                 device=cfg.device)
