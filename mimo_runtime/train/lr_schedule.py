"""Learning rate of one optimizer step, from a module's resolved optimizer section (pure).

Megatron's shapes: a linear warm-up to the peak `lr`, then constant, cosine or linear decay to
`min_lr` at step `decay_steps`, flat after. The lr depends on the step index alone, so a resumed
run and every rank agree without carrying scheduler state.
"""

import math
from typing import Dict

from mimo_runtime.topology import Topology
from mimo_runtime.topology.schema import Optimizer


def lr_at(opt: Optimizer, step: int) -> float:
    """The lr of optimizer step `step` (0-based): step 0 already takes a warm-up's first slice."""
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    if opt.lr_schedule == "constant":
        return opt.lr
    span = opt.decay_steps - opt.warmup_steps
    progress = min(1.0, (step - opt.warmup_steps) / span) if span > 0 else 1.0
    if opt.lr_schedule == "warmup_cosine":
        return opt.min_lr + (opt.lr - opt.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if opt.lr_schedule == "warmup_linear":
        return opt.lr - (opt.lr - opt.min_lr) * progress
    raise ValueError(f"unknown lr_schedule {opt.lr_schedule!r}")


def learning_rates(topology: Topology, step: int) -> Dict[str, float]:
    """{module: lr} at `step`, for every module of the topology (any rank can report them all)."""
    return {n: lr_at(m.optimizer, step) for n, m in topology.modules.items()}
