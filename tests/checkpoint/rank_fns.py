"""Rank functions the checkpoint tests spawn (module level, so `spawn` can import them)."""

from typing import List, Optional, Tuple


def load_errors(rank: int, cases: List[Tuple]) -> List[Optional[str]]:
    """For each (topology, seed, checkpoint dir): build that run's runtime, load, keep the error line."""
    from mimo_runtime.errors import UserError
    from mimo_runtime.train.checkpoint import load_checkpoint
    from mimo_runtime.train.loop import RunConfig
    from mimo_runtime.train.runtime import Runtime

    out = []
    for topo, seed, root in cases:
        rt = Runtime(topo, RunConfig(steps=1, seed=seed, colocated=True, nproc=1, timeout_s=30, progress=False), rank)
        try:
            load_checkpoint(rt, root)
            out.append(None)
        except UserError as e:
            out.append(e.line())
    return out


def load_then_resume(rank: int, world_size: int, cases: List[Tuple], resumes: List[Tuple]):
    """One process for several scenarios (imports cost seconds): load errors, then resumed runs."""
    from mimo_runtime.train.loop import train_rank

    return load_errors(rank, cases), [train_rank(rank, world_size, topo, cfg) for topo, cfg in resumes]
