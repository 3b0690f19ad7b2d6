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
    frozen_lead: int = 1  # forwards of the next step an encoder that trains nothing computes ahead (0: none)
    metrics_path: Optional[str] = None
    timeout_s: float = 120.0
    progress: bool = True
    device: str = "cpu"  # "cpu" or "cuda", resolved from --device / train.device by the launcher (train/device.py)
    grad_reducer: str = "runtime"  # "runtime" (train/grads.py) or "megatron" (train/megatron_ddp.py), resolved
    capture_grads_step: Optional[int] = None  # tests: return every parameter's reduced grad at this step
    eval_forward: bool = False  # tests: also run a forward-only pass over each training batch
    # checkpoints, evaluation, trace (train/checkpoint.py, evaluate.py, trace.py)
    checkpoint_dir: Optional[str] = None
    save_every: int = 0  # 0: save only at the end (when checkpoint_dir is set)
    keep_last: int = 3  # 0: keep every checkpoint
    resume: bool = False  # start from `latest` in checkpoint_dir when there is one
    eval_every: int = 0  # 0: no held-out evaluation
    eval_batches: int = 0  # global batches of the held-out split per evaluation; 0: the whole split
    trace_path: Optional[str] = None  # Chrome-trace JSON of every rank's actions
    tensorboard_dir: Optional[str] = None  # needs the optional `tensorboard` package
    wandb_project: Optional[str] = None  # log metrics to Weights & Biases (the optional `wandb` package)
    peak_tflops: Optional[float] = None  # per-device peak for MFU (default: the GPU's, from a table; none on CPU)
