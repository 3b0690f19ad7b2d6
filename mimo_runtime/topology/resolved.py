"""A validated `Topology` back to the file format, every default filled in.

`mimo-run plan --resolved` prints it and every checkpoint keeps it as `topology.yaml`: the exact
run, independent of later changes to defaults or to the file. Loading the text again gives the
same `Topology` (tests/topology/test_resolved.py).
"""

import dataclasses
from typing import Any, Dict

import yaml

from mimo_runtime.topology.schema import Module, Optimizer, Topology

# keys of one optimizer that the other rejects when given explicitly (training._check_optimizer)
_ONLY_FOR = {"momentum": "sgd", "betas": "adamw", "eps": "adamw"}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _optimizer(opt: Optimizer, names) -> Dict[str, Any]:
    """The keys every optimizer in `names` accepts explicitly."""
    return {k: v for k, v in _plain(opt).items() if k not in _ONLY_FOR or {_ONLY_FOR[k]} >= set(names)}


def _module(m: Module) -> Dict[str, Any]:
    out = _plain(m)
    del out["name"]
    if m.kind == "language":
        del out["modality"]
    if m.pretrained is None:
        del out["pretrained"]
    out["optimizer"] = _optimizer(m.optimizer, [m.optimizer.name])
    return out


def resolved_dict(topo: Topology) -> Dict[str, Any]:
    train = _plain(topo.train)
    # train.optimizer holds defaults for modules, which repeat them below: keep only what every module accepts
    train["optimizer"] = _optimizer(topo.train.optimizer, {m.optimizer.name for m in topo.modules.values()})
    for key in ("lr", "weight_decay"):
        del train["optimizer"][key]  # given as train.lr / train.weight_decay
    out = {"name": topo.name, "model": _plain(topo.model), "placement": topo.placement,
           "modules": {n: _module(m) for n, m in topo.modules.items()},
           "edges": _plain(topo.edges), "train": train}
    if topo.data is not None:
        out["data"] = _plain(topo.data)
    return out


def resolved_yaml(topo: Topology) -> str:
    header = f"# {topo.source}, resolved: every default filled in (mimo-run plan --resolved)\n"
    return header + yaml.safe_dump(resolved_dict(topo), sort_keys=False, default_flow_style=None, width=100)
