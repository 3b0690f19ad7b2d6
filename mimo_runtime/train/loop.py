"""The training loop of one rank, read top to bottom: build the runtime, run the steps, report."""

import json
import sys
from dataclasses import dataclass, field
from typing import Dict, List

from mimo_runtime.topology import Topology
from mimo_runtime.train.config import RunConfig
from mimo_runtime.train.runtime import Runtime, plan_for

__all__ = ["RunConfig", "RankResult", "train_rank", "plan_for"]


@dataclass
class RankResult:
    metrics: List[Dict] = field(default_factory=list)
    grads: Dict[str, tuple] = field(default_factory=dict)
    eval_losses: List[float] = field(default_factory=list)
    comm: Dict[str, int] = field(default_factory=dict)


def train_rank(rank: int, world_size: int, topology: Topology, cfg: RunConfig) -> RankResult:
    rt = Runtime(topology, cfg, rank)
    result = RankResult()
    if cfg.capture_grads_step is not None:
        rt.before_optimizer_step = lambda step: _capture(rt, result, step)
    for step in range(cfg.steps):
        if cfg.eval_forward:
            result.eval_losses.append(rt.eval_step(step))
        record = rt.train_step(step)
        result.metrics.append(record)
        if rank == 0:
            _report(record, cfg)
    result.comm = vars(rt.executor.stats).copy()
    return result


def _capture(rt: Runtime, result: RankResult, step: int) -> None:
    from mimo_runtime.model import global_parameters

    if step == rt.cfg.capture_grads_step:
        result.grads = {name: (p.grad.clone() if p.grad is not None else None, dim, tp_rank, tp_size)
                        for name, (p, dim, tp_rank, tp_size) in global_parameters(rt.model).items()}


def _report(record: Dict, cfg: RunConfig) -> None:
    if cfg.metrics_path:
        with open(cfg.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    if cfg.progress:
        sys.stderr.write(f"step {record['step']}/{cfg.steps}  loss {record['loss']:.4f}  "
                         f"grad_norm {record['grad_norm']:.3f}  {record['step_time_s']:.2f}s\n")
        sys.stderr.flush()
