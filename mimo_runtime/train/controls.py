"""The per-module training controls a topology asks for, applied to a freshly built model.

Order matters: freezing first (the census then records what trains), pretrained weights next
(checked against the census so every rank reports the same problems), precision last (it wraps
forwards only). Returns the encoders frozen entirely, which get no backward and send no gradients.
"""

from typing import List

from mimo_runtime.plan import Plan
from mimo_runtime.train.freeze import apply_freeze, check_freeze_patterns, entirely_frozen, parameter_census
from mimo_runtime.train.precision import apply_precision
from mimo_runtime.train.pretrained import load_pretrained
from mimo_runtime.train.pretrained_checkpoint import load_pretrained_checkpoints


def prepare_modules(model, plan: Plan, rank: int) -> List[str]:
    """Collective: every rank calls it once, right after build_model."""
    apply_freeze(model, plan, rank)
    census = parameter_census(model, plan, rank)
    check_freeze_patterns(plan, census)
    load_pretrained(model, plan, rank, census)
    load_pretrained_checkpoints(model, plan, rank)
    apply_precision(model, plan, rank)
    return entirely_frozen(plan, census)
