"""Per-step metrics and how rank 0 reports them: JSONL, TensorBoard, Weights & Biases, progress.

Every rank computes the same record (loss and grad norms are already global after the optimizer
step); the per-module times, each rank's busy time and peak memory need one small all-reduce,
because each module's compute happens on its own ranks. Rank 0 adds what only needs the data and
the architecture (non-padding tokens, model FLOPs, MFU), writes the file and shows progress,
whatever modules it holds.
"""

import json
import resource
import sys
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import torch
import torch.distributed as dist

from mimo_runtime.train.trace import Record, module_compute_seconds

ALL_MODULES = "*"  # colocated ranks run every module in one forward


@dataclass(frozen=True)
class StepTimes:
    module_time_s: Dict[str, float]  # the busiest rank's forward + backward seconds, per module
    compute_s: List[float]  # per rank: its forward + backward seconds
    peak_memory_mb: List[float]  # per rank: the process's peak resident memory (CUDA: peak allocated)


def step_times(records: List[Record], modules: List[str], rank: int, world: int) -> StepTimes:
    """One all-reduce (MAX) of every module's time and of each rank's own slots (collective)."""
    names = list(modules) + [ALL_MODULES]
    local = module_compute_seconds(records)
    buf = torch.zeros(len(names) + 2 * world, dtype=torch.float64)
    buf[:len(names)] = torch.tensor([local.get(n, 0.0) for n in names], dtype=torch.float64)
    buf[len(names) + rank] = sum(local.values())
    buf[len(names) + world + rank] = peak_memory_mb()
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    times = {n: round(float(v), 6) for n, v in zip(names, buf) if v > 0}
    values = buf.tolist()
    return StepTimes(times, [round(v, 6) for v in values[len(names):len(names) + world]],
                     [round(v, 1) for v in values[len(names) + world:]])


def peak_memory_mb() -> float:
    """This process's peak memory so far: CUDA's peak allocation when CUDA is in use, else peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bubble_share(compute_s: List[float], step_time_s: float) -> float:
    """The share of the step's rank-seconds in which ranks computed nothing (waiting, sending, reducing)."""
    return max(0.0, 1.0 - sum(compute_s) / (len(compute_s) * step_time_s))


def content_tokens(token_samples) -> int:
    """Non-padding tokens of samples: each sample's positions up to its last loss-carrying one, plus the
    token that position predicts (what a padded batch holds beyond this is padding)."""
    total = 0
    for t in token_samples:
        where = t["loss_mask"].nonzero()
        total += min(int(where[-1]) + 2, t["loss_mask"].numel()) if where.numel() else 0
    return total


def throughput(flops: Mapping[str, int], step_time_s: float, ranks: Mapping[str, int],
               peak_tflops: Optional[float]) -> Dict[str, Dict[str, float]]:
    """{"tflops_per_s": {module: .., "all": ..}} and, with a peak per device, {"mfu": {...}} likewise."""
    from mimo_runtime.train.flops import mfu

    out = {"tflops_per_s": {n: f / step_time_s / 1e12 for n, f in flops.items()}}
    total = sum(flops.values())
    out["tflops_per_s"]["all"] = total / step_time_s / 1e12
    if peak_tflops:
        out["mfu"] = {n: mfu(f, step_time_s, ranks[n], peak_tflops) for n, f in flops.items()}
        out["mfu"]["all"] = mfu(total, step_time_s, sum(ranks.values()), peak_tflops)
    return out


def data_metrics(rt, step: int, step_time_s: float, peak_tflops: Optional[float]) -> Dict:
    """Rank 0's fields from the step's samples and the architecture: non-padding tokens/s, and for a
    preset model its FLOPs per module as TFLOPs/s and MFU. Empty without a dataset (the Python API's
    own batches)."""
    from mimo_runtime.topology.hf import preset_of
    from mimo_runtime.train.flops import preset_step_flops

    if rt.feeder is None:
        return {}
    ids = rt.feeder.sampler.step_samples(step)
    # counted where the tokens are read anyway, all-reduced with the loss denominator (MimoCompute.begin_step)
    out = {"nonpad_tokens_per_s": rt.executor.compute.content_tokens / step_time_s}
    plan = rt.plan
    items = {n: sum(rt.dataset.num_items(i, n) for i in ids) for n in plan.encoders}
    flops = preset_step_flops(preset_of(rt.topology), len(ids), items,
                              {n: plan.modules[n].frozen for n in plan.encoders})
    if flops is not None:
        out.update(throughput(flops, step_time_s, {n: plan.modules[n].size for n in flops}, peak_tflops))
    return out


def device_peak_tflops() -> Optional[float]:
    """Dense bf16 peak of this rank's GPU when it is one this table knows; None on CPU (pass --peak-tflops)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in _PEAK_BF16_TFLOPS.items() if key in name), None)


_PEAK_BF16_TFLOPS = {"B200": 2250.0, "H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def tokens_per_step(global_batch: int, seq_length: int) -> int:
    """Sequence positions the language model processes per step (padding included, as Megatron counts)."""
    return global_batch * seq_length


class Reporter:
    """Rank 0's sink for step records: appends JSONL, logs TensorBoard and W&B scalars, draws progress."""

    def __init__(self, metrics_path: Optional[str], progress: bool, tensorboard_dir: Optional[str] = None, out=None,
                 wandb_project: Optional[str] = None, wandb_dir: Optional[str] = None):
        self.metrics_path, self.progress = metrics_path, progress
        self.out = out or sys.stderr
        self.tb = _summary_writer(tensorboard_dir) if tensorboard_dir else None
        self.wandb = _wandb_run(wandb_project, wandb_dir) if wandb_project else None
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
        if self.wandb is not None:
            self.wandb.log(_flat(record), step=record["step"])
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
        if self.wandb is not None:
            self.wandb.finish()


def format_line(record: Dict, steps: int) -> str:
    text = (f"step {record['step']}/{steps}  loss {record['loss']:.4f}  grad_norm {record['grad_norm']:.3f}  "
            f"{record['step_time_s']:.2f}s")
    if "tokens_per_s" in record:
        text += f"  {record['tokens_per_s']:.0f} tok/s"
    if "eval_loss" in record:
        text += f"  eval_loss {record['eval_loss']:.4f}  caption_acc {record['caption_accuracy']:.3f}"
    return text


def _flat(record: Dict, prefix: str = "") -> Dict[str, float]:
    """Scalars by path ("mfu/language"); per-rank lists as "peak_memory_mb/rank0", ..."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, list):
            out.update(_flat({f"rank{i}": x for i, x in enumerate(v)}, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and k != "step":
            out[prefix + k] = float(v)
    return out


def _is_tty(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def wandb_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


def _wandb_run(project: str, directory: Optional[str]):
    """A W&B run; WANDB_MODE=offline keeps it on disk (`wandb sync` uploads it later)."""
    import wandb  # optional: pip install 'mimo-runtime[wandb]'

    return wandb.init(project=project, dir=directory, reinit="create_new")


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
