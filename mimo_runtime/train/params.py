"""A module's parameters by canonical name, and the name patterns of `freeze` / `no_weight_decay`.

Patterns match the canonical name (global layer indices, `mimo_runtime.model.init`) either in full
(`modality_submodules.images.encoders.*`) or relative to the module (`encoders.*`,
`decoder.layers.0.*`), so one pattern means the same parameters on every topology.
"""

import fnmatch
from typing import Dict, Iterable, Optional, Tuple

import torch

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG

ParamEntry = Tuple[torch.nn.Parameter, Optional[int], int, int]  # (param, partition_dim, tp_rank, tp_size)


def module_prefix(module: str) -> str:
    return "language_model." if module == LANG else f"modality_submodules.{module}."


def relative_name(canonical: str, module: str) -> str:
    prefix = module_prefix(module)
    return canonical[len(prefix):] if canonical.startswith(prefix) else canonical


def named_module_parameters(model, module: str) -> Dict[str, ParamEntry]:
    """{canonical name: (param, partition_dim, tp_rank, tp_size)} of `module` on this rank."""
    from mimo_runtime.model import global_parameters

    prefix = module_prefix(module)
    return {n: e for n, e in global_parameters(model).items() if n.startswith(prefix)}


def matches(canonical: str, module: str, patterns: Iterable[str]) -> bool:
    rel = relative_name(canonical, module)
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(canonical, p) for p in patterns)
