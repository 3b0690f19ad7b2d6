"""The training loop of one rank, read top to bottom: build, resume, train (evaluate, save), report.

Collectives happen in the same order on every rank: the resume check, then per step the train
step, the per-module time reduction, an evaluation when due, a save when due; at the end the
trace gather. Rank 0 reports (metrics file, TensorBoard, progress).
"""

from dataclasses import dataclass, field
from typing import Dict, List

from mimo_runtime.topology import Topology
from mimo_runtime.train.config import RunConfig
from mimo_runtime.train.runtime import Runtime, plan_for

__all__ = ["RunConfig", "RankResult", "train_rank", "plan_for"]


@dataclass
class RankResult:
    metrics: List[Dict] = field(default_factory=list)
    grads: Dict[str, tuple] = field(default_factory=dict)
    eval_losses: List[float] = field(default_factory=list)
    comm: Dict[str, int] = field(default_factory=dict)
    start_step: int = 0  # the step a resumed run started from (0 when not resumed)
    checkpoints: List[str] = field(default_factory=list)  # directories this run saved


def train_rank(rank: int, world_size: int, topology: Topology, cfg: RunConfig) -> RankResult:
    from mimo_runtime.train import checkpoint, evaluate, memory, metrics, trace

    rt = Runtime(topology, cfg, rank)
    result = RankResult()
    if cfg.capture_grads_step is not None:
        rt.before_optimizer_step = lambda step: _capture(rt, result, step)
    reporter = _reporter(cfg, rank)
    if cfg.checkpoint_dir and cfg.resume:
        result.start_step = _resume(rt, cfg, reporter)
    recorder = trace.TraceRecorder(rank) if cfg.trace_path else None
    held_out = evaluate.held_out_feeder(rt) if cfg.eval_every else None
    tokens = metrics.tokens_per_step(rt.plan.global_batch, rt.model_facts()[1] or rt.dataset.seq_length)
    peak_tflops = cfg.peak_tflops or metrics.device_peak_tflops()
    if reporter:
        reporter.start(cfg.steps, result.start_step)
    for step in range(result.start_step, cfg.steps):
        if cfg.eval_forward:
            result.eval_losses.append(rt.eval_step(step))
        records = _take_trace(rt)
        record = rt.train_step(step)
        records = _take_trace(rt)
        if recorder:
            recorder.add(records, step, "train")
        record["tokens_per_s"] = tokens / record["step_time_s"]
        times = metrics.step_times(records, list(rt.plan.modules), rank, world_size)
        record.update(module_time_s=times.module_time_s, peak_memory_mb=times.peak_memory_mb,
                      bubble=metrics.bubble_share(times.compute_s, record["step_time_s"]))
        if reporter:
            record.update(metrics.data_metrics(rt, step, record["step_time_s"], peak_tflops))
        record["activation_peak_mb"] = memory.peak_mb(rt.executor.memory, rt.executor.compute.device)
        if held_out is not None and _due(step, cfg.eval_every, cfg.steps):
            record.update(evaluate.evaluate(rt, held_out, evaluate.num_batches(held_out, cfg.eval_batches)))
            if recorder:
                recorder.add(_take_trace(rt), step, "eval")
        result.metrics.append(record)
        if reporter:
            reporter.report(record)
        if cfg.checkpoint_dir and _due(step, cfg.save_every, cfg.steps):
            result.checkpoints.append(checkpoint.save_checkpoint(rt, cfg.checkpoint_dir, step + 1, cfg.keep_last))
            if reporter:
                reporter.note(f"saved checkpoint {result.checkpoints[-1]}")
    if reporter:
        reporter.close()
    if recorder:
        recorder.write(cfg.trace_path, _describe(rt))
    result.comm = vars(rt.executor.stats).copy()
    local = rt.executor.local
    result.comm["shm_channels"] = 0 if local is None else len(local.inbound) + len(local.outbound)
    return result


def _due(step: int, every: int, steps: int) -> bool:
    """After step `step` (0-based): every `every` steps, and always after the last one."""
    return step + 1 == steps or (every > 0 and (step + 1) % every == 0)


def _take_trace(rt: Runtime) -> List:
    """The executor's records since the last call (the list is emptied so long runs stay small)."""
    records = list(rt.executor.trace)
    rt.executor.trace.clear()
    return records


def _resume(rt: Runtime, cfg: RunConfig, reporter) -> int:
    from mimo_runtime.train.checkpoint import load_checkpoint

    meta = load_checkpoint(rt, cfg.checkpoint_dir)
    if meta is None:
        if reporter:
            reporter.note(f"no checkpoint in {cfg.checkpoint_dir} yet: starting from step 0")
        return 0
    if reporter:
        saved = meta.get("saved_on", {})
        reporter.note(f"resumed from step {meta['step']} of {cfg.checkpoint_dir} (saved on "
                      f"{saved.get('topology') or 'a topology'} with {saved.get('world_size', '?')} ranks)")
    return int(meta["step"])


def _reporter(cfg: RunConfig, rank: int):
    from mimo_runtime.train.metrics import Reporter

    return Reporter(cfg.metrics_path, cfg.progress, cfg.tensorboard_dir, wandb_project=cfg.wandb_project) \
        if rank == 0 else None


def _describe(rt: Runtime):
    plan = rt.plan

    def describe(rank: int) -> str:
        parts = [f"{n} stage {plan.modules[n].coords(rank).pp}" for n in plan.modules_on(rank)]
        return ", ".join(parts) if parts else "no module"

    return describe


def _capture(rt: Runtime, result: RankResult, step: int) -> None:
    from mimo_runtime.model import global_parameters

    if step == rt.cfg.capture_grads_step:
        result.grads = {name: (p.grad.clone() if p.grad is not None else None, dim, tp_rank, tp_size)
                        for name, (p, dim, tp_rank, tp_size) in global_parameters(rt.model).items()}
