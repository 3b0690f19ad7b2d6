"""The training loop of one rank, read top to bottom: plan, groups, model, schedule, steps."""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan, colocated_plan, make_plan
from mimo_runtime.topology import Topology
from mimo_runtime.train.executor import Executor, StepState
from mimo_runtime.train.feed import Feeder
from mimo_runtime.train.optim import build_optimizers, global_loss, global_norm_and_loss, step_optimizers
from mimo_runtime.train.sampler import Sampler


@dataclass(frozen=True)
class RunConfig:
    """Everything a rank needs besides the topology; picklable so launchers can ship it."""

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


@dataclass
class RankResult:
    metrics: List[Dict] = field(default_factory=list)
    grads: Dict[str, tuple] = field(default_factory=dict)
    eval_losses: List[float] = field(default_factory=list)
    comm: Dict[str, int] = field(default_factory=dict)


def plan_for(topology: Topology, cfg: RunConfig) -> Plan:
    return colocated_plan(topology, cfg.nproc) if cfg.colocated else make_plan(topology)


def train_rank(rank: int, world_size: int, topology: Topology, cfg: RunConfig) -> RankResult:
    from mimo_runtime.data import collate_modality, collate_tokens, make_dataset
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model import build_model, global_parameters, masked_token_loss_sum
    from mimo_runtime.schedule import build_schedule

    plan = plan_for(topology, cfg)
    groups = build_module_groups(plan, cfg.timeout_s)
    model = build_model(plan, groups, rank, cfg.seed)
    t = topology.train
    optimizers = build_optimizers(model, plan, rank, t.lr, t.weight_decay)
    dataset = make_dataset(topology.model, "train", cfg.seed)
    feeder = Feeder(plan, dataset, Sampler.for_plan(plan, len(dataset), cfg.seed), collate_tokens, collate_modality)
    trainable = {n: True for n in plan.modules}  # a frozen encoder's projection still trains
    schedule = build_schedule(plan, plan.num_microbatches, cfg.schedule)
    actions = schedule.for_rank(plan, rank)
    forward_actions = build_schedule(plan, plan.num_microbatches, "forward").for_rank(plan, rank)

    result = RankResult()
    step_out: Dict[str, float] = {}

    def on_opt_step(st: StepState) -> None:
        norm, loss = global_norm_and_loss(model, plan, rank, st.loss_sum)
        if cfg.capture_grads_step == st.step:
            result.grads = {name: (p.grad.clone() if p.grad is not None else None, dim, tp_rank, tp_size)
                            for name, (p, dim, tp_rank, tp_size) in global_parameters(model).items()}
        step_optimizers(model, optimizers, norm, t.grad_clip)
        step_out.update(loss=loss, grad_norm=norm)

    executor = Executor(plan, groups, model, rank, feeder, masked_token_loss_sum, cfg.timeout_s, trainable,
                        on_opt_step)
    model.train()
    for step in range(cfg.steps):
        if cfg.eval_forward:
            st = executor.run_step(forward_actions, step, train=False)
            result.eval_losses.append(global_loss(plan, rank, st.loss_sum))
        t0 = time.perf_counter()
        executor.run_step(actions, step, train=True)
        record = {"step": step + 1, "loss": step_out["loss"], "grad_norm": step_out["grad_norm"],
                  "step_time_s": time.perf_counter() - t0, "lr": t.lr}
        result.metrics.append(record)
        if rank == 0:
            _report(record, cfg)
    result.comm = vars(executor.stats).copy()
    return result


def _report(record: Dict, cfg: RunConfig) -> None:
    if cfg.metrics_path:
        with open(cfg.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    if cfg.progress:
        sys.stderr.write(f"step {record['step']}/{cfg.steps}  loss {record['loss']:.4f}  "
                         f"grad_norm {record['grad_norm']:.3f}  {record['step_time_s']:.2f}s\n")
        sys.stderr.flush()
