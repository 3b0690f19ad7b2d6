"""Per-step metrics and how rank 0 reports them: JSONL, TensorBoard (when asked), progress.

Every rank computes the same record (loss and grad norm are already global after the optimizer
step); the per-module times need one small all-reduce, because each module's compute happens on
its own ranks. Rank 0 writes the file and shows progress, whatever modules it holds.
"""

import json
import sys
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from mimo_runtime.train.trace import Record, module_compute_seconds

ALL_MODULES = "*"  # colocated ranks run every module in one forward


def module_times(records: List[Record], modules: List[str]) -> Dict[str, float]:
    """{module: the busiest rank's forward + backward seconds in `records`} (collective, MAX)."""
    names = list(modules) + [ALL_MODULES]
    local = module_compute_seconds(records)
    buf = torch.tensor([local.get(n, 0.0) for n in names], dtype=torch.float64)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return {n: round(float(v), 6) for n, v in zip(names, buf) if v > 0}


def tokens_per_step(global_batch: int, seq_length: int) -> int:
    """Sequence positions the language model processes per step (padding included, as Megatron counts)."""
    return global_batch * seq_length


class Reporter:
    """Rank 0's sink for step records: appends JSONL, logs TensorBoard scalars, draws progress."""

    def __init__(self, metrics_path: Optional[str], progress: bool, tensorboard_dir: Optional[str] = None, out=None):
        self.metrics_path, self.progress = metrics_path, progress
        self.out = out or sys.stderr
        self.tb = _summary_writer(tensorboard_dir) if tensorboard_dir else None
        self.steps, self.bar, self.lines = 0, None, False

    def start(self, steps: int, start: int) -> None:
        """Steps run from `start` (a resumed run) to `steps`."""
        self.steps = steps
        self.bar = _RichBar(steps, start, self.out) if self.progress and _is_tty(self.out) else None
        self.lines = self.progress and self.bar is None

    def report(self, record: Dict) -> None:
        if self.metrics_path:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in _flat(record).items():
                self.tb.add_scalar(key, value, record["step"])
        if self.bar is not None:
            self.bar.update(record)
        elif self.lines:
            self.out.write(format_line(record, self.steps) + "\n")
            self.out.flush()

    def note(self, text: str) -> None:
        if not self.progress:
            return
        if self.bar is not None:
            self.bar.print(text)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def format_line(record: Dict, steps: int) -> str:
    text = (f"step {record['step']}/{steps}  loss {record['loss']:.4f}  grad_norm {record['grad_norm']:.3f}  "
            f"{record['step_time_s']:.2f}s")
    if "tokens_per_s" in record:
        text += f"  {record['tokens_per_s']:.0f} tok/s"
    if "eval_loss" in record:
        text += f"  eval_loss {record['eval_loss']:.4f}  caption_acc {record['caption_accuracy']:.3f}"
    return text


def _flat(record: Dict, prefix: str = "") -> Dict[str, float]:
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and k != "step":
            out[prefix + k] = float(v)
    return out


def _is_tty(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _summary_writer(log_dir: str):
    from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

    return SummaryWriter(log_dir)


class _RichBar:
    """A live bar with loss and throughput; plain lines take its place when stderr is not a terminal."""

    def __init__(self, steps: int, start: int, out):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=Console(file=out), transient=False)
        self.task = self.progress.add_task("train", total=steps, completed=start, info="")
        self.progress.start()

    def update(self, record: Dict) -> None:
        info = f"loss {record['loss']:.4f}  {record.get('tokens_per_s', 0):.0f} tok/s"
        if "eval_loss" in record:
            info += f"  eval {record['eval_loss']:.4f}  acc {record['caption_accuracy']:.3f}"
        self.progress.update(self.task, completed=record["step"], info=info)

    def print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        self.progress.stop()
