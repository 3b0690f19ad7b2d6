"""Pretrained weights for a module: `modules.NAME.pretrained: {path, format, map, strict}`.

format torch: a file saved with `torch.save({name: full tensor})`. Names are canonical
(`mimo_runtime.model.global_parameters`: global layer indices, unsharded tensors), either full
(`modality_submodules.images.encoders...`, as a whole-model file has them) or relative to the
module (`encoders...`, as an encoder saved on its own has them). Each rank copies in only its own
TP shard of its own layers, so a file loads into any topology (resharding by construction), and a
whole-model file can feed one module only (partial loading): keys of other modules are ignored.
A gated (SwiGLU) fc1 is stored full as [gate; up]; `shard_of` gives each rank its slice of each
half (its partition dim is `mimo_runtime.model.init.HalvesDim`), megatron's local layout.
`map: "pkg.mod:fn"` renames stored keys first (fn(name) -> canonical name, or None to drop).

format checkpoint: pretrained_checkpoint.py. Every check runs against the world-wide parameter
census (freeze.parameter_census), so every rank raises the same complete error: missing keys,
shape mismatches and (strict) unexpected keys.
"""

import importlib
import os
from typing import Callable, Dict, List, Optional

import torch

from mimo_runtime.errors import TopologyError
from mimo_runtime.model.init import shard_of
from mimo_runtime.plan import Plan
from mimo_runtime.topology.schema import Pretrained
from mimo_runtime.train.freeze import Census
from mimo_runtime.train.params import module_prefix, named_module_parameters, relative_name

_ANY_MODULE = ("language_model.", "modality_submodules.")
SHOWN = 8  # names listed per problem in the one-line error


def load_pretrained(model, plan: Plan, rank: int, census: Census) -> None:
    for name in plan.modules_on(rank):
        spec = plan.topology.modules[name].pretrained
        if spec is not None and spec.format == "torch":
            where = f"modules.{name}.pretrained"
            stored = _rename(read_state_dict(spec, plan.topology.source, where), spec, plan.topology.source, where)
            _load_module(model, name, stored, spec, census[name], plan.topology.source, where)


def read_state_dict(spec: Pretrained, src: str, where: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(spec.path):
        raise TopologyError(src, f"{where}.path", f"no such file: {spec.path}")
    try:
        stored = torch.load(spec.path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; the user needs the one line
        raise TopologyError(src, f"{where}.path", f"cannot read {spec.path} as a torch state dict "
                                                  f"({type(e).__name__}); save one with torch.save({{name: tensor}})"
                            ) from None
    if not isinstance(stored, dict) or not all(isinstance(v, torch.Tensor) for v in stored.values()):
        raise TopologyError(src, f"{where}.path", f"{spec.path} must hold a flat mapping of parameter name -> tensor")
    return stored


def hook(spec: Pretrained, src: str, where: str) -> Callable[[str], Optional[str]]:
    module, _, fn = spec.map.partition(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise TopologyError(src, f"{where}.map", f"cannot import {spec.map}: {e}") from None


def _rename(stored: Dict[str, torch.Tensor], spec: Pretrained, src: str, where: str) -> Dict[str, torch.Tensor]:
    if not spec.map:
        return stored
    fn, out = hook(spec, src, where), {}
    for key, tensor in stored.items():
        new = fn(key)
        if new is None:
            continue
        if new in out:
            raise TopologyError(src, f"{where}.map", f"{spec.map} maps two stored keys to '{new}'")
        out[new] = tensor
    return out


def _load_module(model, name: str, stored: Dict[str, torch.Tensor], spec: Pretrained, census, src: str,
                 where: str) -> None:
    prefix = module_prefix(name)
    relative = {relative_name(n, name): n for n in census}
    found = {}  # canonical -> stored key
    for key in stored:
        canonical = _canonical(key, prefix, relative)
        if canonical in census:
            found[canonical] = key
    missing = [relative_name(n, name) for n in census if n not in found]
    unexpected = [k for k in stored if k not in found.values()
                  and (k.startswith(prefix) or not k.startswith(_ANY_MODULE))]
    shapes = [f"{relative_name(n, name)}: file {tuple(stored[k].shape)} vs model {census[n][1]}"
              for n, k in found.items() if tuple(stored[k].shape) != tuple(census[n][1])]
    problems = [listing(f"shape mismatch{'es' if len(shapes) > 1 else ''}", shapes)]
    if spec.strict:
        problems += [listing("missing key" + ("s" if len(missing) > 1 else ""), missing),
                     listing("unexpected key" + ("s" if len(unexpected) > 1 else ""), unexpected)]
    if not found:
        problems.append(f"no key of {spec.path} names a parameter of '{name}' (expected e.g. "
                        f"'{next(iter(census), '')}' or '{next(iter(relative), '')}')")
    problems = [p for p in problems if p]
    if problems:
        raise TopologyError(src, where, f"{spec.path}: " + "; ".join(problems))
    with torch.no_grad():
        for canonical, (p, pdim, tp_rank, tp_size) in named_module_parameters(model, name).items():
            if canonical in found:
                full = stored[found[canonical]].to(p.dtype)
                p.copy_(shard_of(full, pdim, tp_rank, tp_size))


def _canonical(key: str, prefix: str, relative: Dict[str, str]) -> Optional[str]:
    if key.startswith(prefix):
        return key
    if key.startswith(_ANY_MODULE):
        return None  # another module's key in a whole-model file
    return relative.get(key)


def listing(what: str, names: List[str]) -> str:
    if not names:
        return ""
    more = f", ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} {what} ({', '.join(names[:SHOWN])}{more})"
