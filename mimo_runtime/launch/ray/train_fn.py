"""What a Ray rank runs for training, and the RunConfig each attempt gives it."""

import dataclasses
import os
import sys
from typing import TextIO

from mimo_runtime.launch.ray.metrics import PROGRESS_ENV


def actor_config(cfg, attempt: int, out: TextIO = sys.stderr):
    """The driver writes metrics and progress, so ranks do not. A restart resumes from the latest
    checkpoint when the run has a checkpoint directory (from step 0 while none is saved yet);
    without one it starts again from step 0: same seed, same data, so the same trajectory."""
    cfg = dataclasses.replace(cfg, metrics_path=None, progress=False)
    if attempt == 0:
        return cfg
    if cfg.checkpoint_dir:
        out.write(f"ray: restarting every rank from the latest checkpoint in {cfg.checkpoint_dir}\n")
        return dataclasses.replace(cfg, resume=True)
    out.write("ray: restarting every rank from step 0 (no --checkpoint-dir)\n")
    return cfg


def train_on_actor(rank: int, world_size: int, topology, cfg):
    """`train_rank`, with rank 0's per-step records going to the file the driver polls."""
    from mimo_runtime.train.loop import train_rank

    if rank == 0:
        cfg = dataclasses.replace(cfg, metrics_path=os.environ[PROGRESS_ENV])
    return train_rank(rank, world_size, topology, cfg)
