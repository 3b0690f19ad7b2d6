"""Training controls per module: each module's optimizer section and precision, resolved from the
`train` defaults, and the rules a single field cannot check.

Inheritance, most specific first: `modules.NAME.optimizer.KEY`, `train.optimizer.KEY`, then
`train.lr` / `train.weight_decay` / `train.steps` (for lr, weight_decay, decay_steps), then
`DEFAULTS`. After `resolve_training` every module's `optimizer` has no None left, so the trainer
reads one complete section per module.
"""

import dataclasses
import re
from typing import Any, Dict

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology.problems import Problems
from mimo_runtime.topology.schema import Module, Optimizer, Topology

DEFAULTS: Dict[str, Any] = dict(name="adamw", betas=(0.9, 0.999), eps=1e-8, momentum=0.0, lr_schedule="constant",
                                warmup_steps=0, min_lr=0.0, no_weight_decay=("*bias", "*norm*"))
_HOOK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def given(section: Optimizer) -> Dict[str, Any]:
    """The keys a file gave in an optimizer section (None = not given)."""
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    return {k: v for k, v in values.items() if v is not None}


def resolve_training(topo: Topology) -> Topology:
    src, t = topo.source, topo.train
    for key in ("lr", "weight_decay"):
        if getattr(t.optimizer, key) is not None:
            raise TopologyError(src, f"train.optimizer.{key}",
                                f"give the default as train.{key} (modules.NAME.optimizer.{key} overrides it per module)")
    base = dict(DEFAULTS, lr=t.lr, weight_decay=t.weight_decay, decay_steps=t.steps)
    train_given = given(t.optimizer)
    resolved_train = Optimizer(**dict(base, **train_given))
    problems = Problems(src)
    with problems.guard():
        _check_optimizer(resolved_train, lambda k: _where(k, "train", train_given, {}), train_given, src)
    modules = {}
    for n, m in topo.modules.items():
        with problems.guard():
            modules[n] = _resolve_module(m, base, train_given, t.precision, src)
    problems.stop()
    return dataclasses.replace(topo, modules=modules, train=dataclasses.replace(t, optimizer=resolved_train))


def _resolve_module(m: Module, base: Dict[str, Any], train_given: Dict[str, Any], precision: str,
                    src: str) -> Module:
    mine = given(m.optimizer)
    opt = Optimizer(**{**base, **train_given, **mine})
    _check_optimizer(opt, lambda k: _where(k, m.name, train_given, mine), {**train_given, **mine}, src)
    for i, pattern in enumerate(m.freeze):
        if not pattern.strip():
            raise TopologyError(src, f"modules.{m.name}.freeze[{i}]", "an empty pattern matches nothing")
    if m.pretrained is not None:
        path = f"modules.{m.name}.pretrained"
        if not m.pretrained.path:
            raise TopologyError(src, f"{path}.path", "must name a file or checkpoint directory")
        if m.pretrained.map and not _HOOK.match(m.pretrained.map):
            raise TopologyError(src, f"{path}.map", f"expected 'package.module:function', got {m.pretrained.map!r}")
    return dataclasses.replace(m, optimizer=opt, precision=m.precision or precision)


def _where(key: str, module: str, train_given: Dict[str, Any], mine: Dict[str, Any]) -> str:
    """The file path that set `key` for this module: where a user would change it."""
    if key in mine:
        return f"modules.{module}.optimizer.{key}"
    if key in train_given:
        return f"train.optimizer.{key}"
    if key in ("lr", "weight_decay"):
        return f"train.{key}"
    if key == "decay_steps":
        return "train.steps"
    return f"modules.{module}.optimizer.{key}" if module != "train" else f"train.optimizer.{key}"


def _check_optimizer(opt: Optimizer, where, explicit: Dict[str, Any], src: str) -> None:
    if opt.name == "adamw" and "momentum" in explicit:
        raise TopologyError(src, where("momentum"), "momentum applies to sgd; adamw uses betas")
    for key in ("betas", "eps"):
        if opt.name == "sgd" and key in explicit:
            raise TopologyError(src, where(key), f"{key} applies to adamw, not sgd")
    for b in opt.betas:
        if not 0.0 <= b < 1.0:
            raise TopologyError(src, where("betas"), f"each beta must be in [0, 1), got {list(opt.betas)}")
    if opt.lr_schedule == "constant" and opt.warmup_steps:
        raise TopologyError(src, where("warmup_steps"),
                            "lr_schedule constant has no warm-up; use warmup_cosine or warmup_linear")
    if opt.warmup_steps > opt.decay_steps:
        raise TopologyError(src, where("warmup_steps"),
                            f"{opt.warmup_steps} warm-up steps exceed decay_steps={opt.decay_steps}")
    if opt.min_lr > opt.lr:
        raise TopologyError(src, where("min_lr"), f"{opt.min_lr} is above the peak lr {opt.lr}")
    for i, pattern in enumerate(opt.no_weight_decay):
        if not pattern.strip():
            raise TopologyError(src, f"{where('no_weight_decay')}[{i}]", "an empty pattern matches nothing")
