"""RunConfig: what a rank needs besides the topology; picklable so every launcher can ship it."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RunConfig:
    steps: int
    seed: int
    colocated: bool = False
    nproc: int = 1
    schedule: str = "1f1b"
    metrics_path: Optional[str] = None
    timeout_s: float = 120.0
    progress: bool = True
    capture_grads_step: Optional[int] = None  # tests: return every parameter's reduced grad at this step
    eval_forward: bool = False  # tests: also run a forward-only pass over each training batch
