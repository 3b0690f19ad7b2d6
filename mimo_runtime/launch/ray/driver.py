"""`launch_ray`: run a topology on a Ray cluster, one actor per rank, restarting on failure.

The driver (this process) owns every actor and placement group it creates, so nothing outlives
it; it writes the metrics file from rank 0's records and prints progress as they arrive.
"""

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from mimo_runtime.launch.spawn import RankFailure
from mimo_runtime.topology import Topology

FAULT_ENV = "MIMO_INJECT_FAULT"


@dataclass
class RayRun:
    results: List[Any]  # per rank, what the rank function returned (RankResult for training)
    placement: List[Dict]  # per rank: rank, node_id, node_ip, pid, hostname
    nodes: Dict[str, Dict[str, float]]  # node id -> its total resources
    attempts: int = 1
    failures: List[str] = field(default_factory=list)  # one line per failed attempt
    metrics: List[Dict] = field(default_factory=list)  # training: the per-step records of the finished run


def launch_ray(topology: Topology, cfg, address: Optional[str] = None, max_restarts: int = 0,
               placement_timeout_s: float = 60.0, job_timeout_s: float = 24 * 3600.0,
               out: TextIO = sys.stderr) -> RayRun:
    """Train `topology` with `cfg` (a RunConfig) on Ray; see docs/launching.md."""
    from mimo_runtime.launch.local import describe_ranks
    from mimo_runtime.launch.ray.metrics import MetricsSink
    from mimo_runtime.launch.ray.train_fn import actor_config, train_on_actor
    from mimo_runtime.train.loop import plan_for

    sink = MetricsSink(cfg.metrics_path, cfg.steps, out, keep_existing=cfg.resume)
    run = run_job(train_on_actor, lambda attempt: (topology, actor_config(cfg, attempt, out)), topology,
                  plan_for(topology, cfg), describe_ranks(topology, cfg), cfg.timeout_s, address, max_restarts,
                  placement_timeout_s, job_timeout_s, sink.add_lines, out, device=cfg.device)
    rank0 = run.results[0]
    sink.add_final(rank0.metrics)
    run.metrics = sink.trajectory()
    if rank0.start_step:
        out.write(f"ray: the last attempt resumed from the checkpoint of step {rank0.start_step}\n")
    if rank0.checkpoints:
        out.write(f"ray: saved checkpoints {', '.join(rank0.checkpoints)}\n")
    return run


def run_job(fn: Callable, args_for: Callable[[int], Sequence[Any]], topology: Topology, plan,
            describe: Callable[[int], str], collective_timeout_s: float, address: Optional[str] = None,
            max_restarts: int = 0, placement_timeout_s: float = 60.0, job_timeout_s: float = 24 * 3600.0,
            on_progress: Callable[[List[str]], None] = lambda lines: None, out: TextIO = sys.stderr,
            device: str = "cpu") -> RayRun:
    """Run `fn(rank, world_size, *args_for(attempt))` on one Ray actor per rank of `plan` (on `device`
    "cuda" each actor over NCCL on the GPU its bundle got)."""
    from mimo_runtime.launch.ray.connect import connect, prepare_driver_env
    from mimo_runtime.launch.ray.placement import rank_bundle, rank_slots

    prepare_driver_env(address)
    # Import everything the driver needs before `ray.init`: inside `ray job submit`, connecting makes
    # Ray unpack the job's working directory again, and for a moment its files are missing.
    import ray
    import ray.util.placement_group  # noqa: F401
    import mimo_runtime.launch.ray.attempt  # noqa: F401

    groups, slots = rank_slots(plan)
    bundles = [rank_bundle(topology, g) for g in groups]
    owned = not ray.is_initialized()  # a caller's own Ray session stays connected
    out.write(f"ray: connected to {connect(address, _local_resources(bundles, slots), _local_cpus(bundles, slots))}\n")
    try:
        return _run_attempts(fn, args_for, topology, groups, slots, bundles, describe, collective_timeout_s,
                             max_restarts, placement_timeout_s, job_timeout_s, on_progress, out, device)
    finally:
        if owned:
            ray.shutdown()  # flushes the ranks' streamed logs now, before the caller prints its result


def _run_attempts(fn, args_for, topology, groups, slots, bundles, describe, collective_timeout_s, max_restarts,
                  placement_timeout_s, job_timeout_s, on_progress, out, device) -> RayRun:
    import ray
    from ray.util.placement_group import remove_placement_group

    from mimo_runtime.launch.ray.attempt import run_attempt
    from mimo_runtime.launch.ray.placement import create_groups

    t0 = time.monotonic()
    pgs = create_groups(topology, groups, [sum(s.group == i for s in slots) for i in range(len(groups))],
                        placement_timeout_s)
    out.write(f"ray: {len(pgs)} placement group(s) ready in {time.monotonic() - t0:.1f} s: "
              + "; ".join(f"{'+'.join(g)} {sum(s.group == i for s in slots)} x {bundles[i]}"
                          for i, g in enumerate(groups)) + "\n")
    failures: List[str] = []
    attempt = 0
    try:
        while True:
            try:
                results, where = run_attempt(fn, args_for(attempt), slots, bundles, pgs, describe,
                                             actor_env(attempt), collective_timeout_s, job_timeout_s, on_progress,
                                             out, device)
                break
            except RankFailure as e:
                failures.append(str(e))
                out.write(f"ray: attempt {attempt + 1}/{max_restarts + 1} failed: {e}\n")
                if attempt == max_restarts:
                    raise
                attempt += 1
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
        return RayRun(results, [where[r] for r in range(len(slots))], nodes, attempt + 1, failures)
    finally:
        for pg in pgs:
            remove_placement_group(pg)


def actor_env(attempt: int) -> Dict[str, str]:
    """The MIMO_* variables ranks see. An injected fault stands for a transient crash: restarted
    attempts run without it (otherwise every restart would crash at the same step)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MIMO_")}
    if attempt > 0:
        env.pop(FAULT_ENV, None)
    return env


def _local_resources(bundles, slots) -> Dict[str, float]:
    """For a Ray started here: enough of each custom resource the topology asks for."""
    total: Dict[str, float] = {}
    for s in slots:
        for key, value in bundles[s.group].items():
            if key not in ("CPU", "GPU", "memory") and not key.startswith("accelerator_type:"):
                total[key] = total.get(key, 0.0) + value
    return total


def _local_cpus(bundles, slots) -> int:
    return max(os.cpu_count() or 1, int(sum(bundles[s.group].get("CPU", 0.0) for s in slots) + 0.999))
