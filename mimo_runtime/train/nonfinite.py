"""A step whose loss or gradient norm is not finite never reaches the optimizer.

Every rank holds the same all-reduced loss and per-module norms, so every rank takes the same
decision without another collective: stop the run with one line naming the step and module, or,
with `train.skip_nonfinite: true`, drop the step's gradients and count it. `MIMO_INJECT_NAN`
(tests) puts a NaN where a diverging run would, like the executor's `MIMO_INJECT_FAULT`.
"""

import math
from typing import Dict, Optional, Tuple

from mimo_runtime.errors import UserError

NAN_ENV = "MIMO_INJECT_NAN"


class NonFiniteError(UserError):
    """`step S: non-finite gradient norm in module M (nan) ...`: the run stops on every rank at once."""


def first_nonfinite(loss: float, norms: Dict[str, float]) -> Optional[Tuple[str, str]]:
    """(what, module) of the first non-finite quantity: the loss (the language model's), then each
    module's gradient norm in plan order; None when all are finite."""
    if not math.isfinite(loss):
        return "loss", "language"
    for name, norm in norms.items():
        if not math.isfinite(norm):
            return "gradient norm", name
    return None


def nonfinite_error(step: int, what: str, module: str, value: float) -> NonFiniteError:
    return NonFiniteError(f"step {step}: non-finite {what} in module {module} ({value}); the run stopped before "
                          f"the optimizer step (train.skip_nonfinite: true skips such steps instead)")


def nan_from_env(rank: int) -> Optional[Tuple[int, str]]:
    """`MIMO_INJECT_NAN=RANK:STEP[:grad|loss]`: (0-based step, where) when it names this rank."""
    from mimo_runtime.train.executor import injection_from_env

    return injection_from_env(NAN_ENV, rank, "grad")


def inject_nan(model, where: str, loss_sum: float) -> float:
    """NaN in this rank's first gradient ("grad") or in its loss sum ("loss"); returns the loss sum."""
    if where == "loss":
        return math.nan
    next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = math.nan
    return loss_sum
