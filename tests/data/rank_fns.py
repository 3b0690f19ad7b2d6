"""Rank functions the data tests spawn (module level, so `spawn` can import them)."""

import os
from typing import Dict, List, Optional, Tuple


def train_runs(rank: int, world_size: int, runs: List[Tuple]) -> List[Tuple[object, Dict[str, int]]]:
    """Several training runs in one process launch (imports cost seconds): each run's result and what
    this rank read from the data (data/llava.py READS). A run given a checkpoint name resumes from it
    (rank 0 points the directory's `latest` there first)."""
    import torch.distributed as dist

    from mimo_runtime.data import llava
    from mimo_runtime.train.checkpoint import LATEST
    from mimo_runtime.train.loop import train_rank

    out = []
    for topo, cfg, resume_from in [(*r, None)[:3] for r in runs]:
        if resume_from is not None:
            _point_latest(rank, cfg.checkpoint_dir, LATEST, resume_from)
            dist.barrier()
        llava.READS.clear()
        result = train_rank(rank, world_size, topo, cfg)
        out.append((result, dict(llava.READS)))
    return out


def _point_latest(rank: int, root: str, latest: str, name: Optional[str]) -> None:
    if rank == 0:
        with open(os.path.join(root, latest), "w") as f:
            f.write(name + "\n")
