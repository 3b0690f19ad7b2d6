"""Rank functions for the training-controls process test (importable by `spawn`)."""

from typing import Dict, Optional

import torch

from mimo_runtime.model import global_parameters
from mimo_runtime.train.loop import RunConfig
from mimo_runtime.train.runtime import Runtime

PRETRAINED_SEED = 99


def write_pretrained_file(topology, cfg: RunConfig, path: str) -> None:
    """A whole-model state dict (full tensors, canonical names) from another seed: a 'pretrained' model."""
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model import build_model
    from mimo_runtime.plan import colocated_plan

    plan = colocated_plan(topology, 1)
    model = build_model(plan, build_module_groups(plan, cfg.timeout_s), 0, PRETRAINED_SEED)
    torch.save({n: p.detach().clone() for n, (p, *_rest) in global_parameters(model).items()}, path)


def _snapshot(rt: Runtime) -> Dict[str, tuple]:
    return {n: (p.detach().clone(), dim, tp_rank, tp_size) for n, (p, dim, tp_rank, tp_size)
            in global_parameters(rt.model).items()}


def controls_rank(rank: int, world_size: int, topology, cfg: RunConfig, make_file: Optional[str] = None) -> dict:
    torch.set_num_threads(1)
    if make_file:
        write_pretrained_file(topology, cfg, make_file)
    rt = Runtime(topology, cfg, rank)
    out = {"frozen_all": list(rt.frozen_all), "initial": _snapshot(rt), "metrics": [], "lrs": [],
           "actions": [(a.kind, a.peer[0] if a.peer else None) for a in rt.train_actions]}
    names = {id(p): n for n, (p, *_rest) in global_parameters(rt.model).items()}

    def capture(step: int) -> None:
        if step == 0:
            out["grads"] = {n: (p.grad.clone() if p.grad is not None else None, dim, tp_rank, tp_size)
                            for n, (p, dim, tp_rank, tp_size) in global_parameters(rt.model).items()}

    rt.before_optimizer_step = capture
    for step in range(cfg.steps):
        out["metrics"].append(rt.train_step(step))
        out["lrs"].append({m: [g["lr"] for g in opt.param_groups] for m, opt in rt.optimizers.items()})
    out["final"] = _snapshot(rt)
    out["requires_grad"] = {n: p.requires_grad for n, (p, *_rest) in global_parameters(rt.model).items()}
    out["in_groups"] = sorted(names[id(p)] for opt in rt.optimizers.values() for g in opt.param_groups
                              for p in g["params"])
    out["state"] = {names[id(p)]: sorted(s) for opt in rt.optimizers.values() for p, s in opt.state.items()}
    out["comm"] = vars(rt.executor.stats).copy()
    return out
