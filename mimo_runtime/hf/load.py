"""HF weights into a built MimoModel: each rank reads only the slices of the tensors it holds.

Called after keyed initialization, so loaded tensors are never overwritten; parameters without an
HF counterpart (a projector of a stage-1 setup, say) keep their keyed values.
"""

from typing import Dict, Iterable, List, Optional, Tuple

import torch

from mimo_runtime.errors import TopologyError
from mimo_runtime.hf.files import SafetensorsDir
from mimo_runtime.hf.names import Recipe, combine, key_index, read_plan, recipe
from mimo_runtime.model.init import _module_of, full_shape, global_parameters
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY as LANG


def module_config(model, module: str):
    """The TransformerConfig of one module `model` holds (heads and query groups of its attention)."""
    if module == LANG:
        return model.language_model.config
    return next(iter(model.modality_submodules[module].encoders.values())).config


def attention_dims(model, module: str) -> Tuple[int, int, int]:
    """(heads, query groups, head dim) of a module's attention."""
    c = module_config(model, module)
    return c.num_attention_heads, c.num_query_groups or c.num_attention_heads, c.kv_channels


@torch.no_grad()
def load_hf_weights(model, sources: Dict[str, Tuple[str, Iterable[str]]], errors: Optional[List] = None) -> int:
    """Fill `model` from HF directories; returns the number of parameters loaded.

    sources: {module: (directory, sections)}: the HF directory of each module this rank may hold and
    the normalized sections (lm, vision, projector) it supplies; every parameter whose recipe reads a
    supplied section must find its tensors there. A model on `meta` reads nothing: without `errors`
    it is left as is (the meta builds of plan/params), with a list every missing tensor and shape
    mismatch is appended to it instead of raised (`mimo-run check`).
    """
    dirs: Dict[str, Tuple[SafetensorsDir, Dict[str, str]]] = {}
    loaded = 0
    for name, (param, pdim, tp_rank, tp) in global_parameters(model).items():
        if param.is_meta and errors is None:
            return 0
        try:
            loaded += _load_one(model, sources, dirs, name, param, pdim, tp_rank, tp)
        except TopologyError as e:
            if errors is None:
                raise
            errors.append(e)
    return loaded


def _load_one(model, sources, dirs, name: str, param, pdim: Optional[int], tp_rank: int, tp: int) -> int:
    module = _module_of(name)
    if module not in sources:
        return 0
    r = recipe(name)
    if r is None:
        if ".input_projections." in name:
            return 0  # a projector HF LLaVA does not have (linear): keyed init
        # e.g. transformer-engine specs name their fused norms differently: never train a
        # silently half-loaded model
        raise TopologyError(sources[module][0], "", f"parameter {name} has no HF counterpart; the loader maps "
                                                    f"the portable layer spec's names (docs/models.md)")
    directory, sections = sources[module]
    if r.sources[0].split(".", 1)[0] not in sections:
        return 0
    if directory not in dirs:
        files = SafetensorsDir(directory)
        dirs[directory] = files, key_index(files.keys(), sections[0] if len(sections) == 1 else None)
    heads, groups, head_dim = attention_dims(model, module)
    out = _shard(*dirs[directory], r, name, param, pdim, tp_rank, tp, heads, groups, head_dim)
    if out is not None:
        param.copy_(out)
    return 1


def _shard(files: SafetensorsDir, index: Dict[str, str], r: Recipe, name: str, param, pdim: Optional[int], tp_rank: int,
           tp: int, heads: int, groups: int, head_dim: int) -> Optional[torch.Tensor]:
    """This rank's slice of `name` from the files, checked first; None for a `meta` param (checked only)."""
    missing = [s for s in r.sources if s not in index]
    if missing:
        raise TopologyError(files.directory, "", f"tensor for {name} is missing (looked for a key ending in "
                                                 f"'{missing[0].split('.', 1)[1]}')")
    keys = [index[s] for s in r.sources]
    shapes = [files.shape(k) for k in keys]
    _check_shapes(files, r, name, keys, shapes, full_shape(param, pdim, tp), heads, groups, head_dim)
    if param.is_meta:
        return None
    parts = [files.read(index[src], dim, a, b) for src, dim, a, b in
             read_plan(r, shapes, pdim, tp_rank, tp, heads, groups)]
    return combine(r, parts, groups // tp).to(param.dtype)


def _check_shapes(files: SafetensorsDir, r: Recipe, name: str, keys, shapes, want, heads: int, groups: int,
                  head_dim: int) -> None:
    rest = list(want[1:])
    if r.kind == "qkv":
        expected = [[heads * head_dim] + rest, [groups * head_dim] + rest, [groups * head_dim] + rest]
    elif r.kind == "qkv_no_k":
        expected = [[heads * head_dim] + rest, [groups * head_dim] + rest]
    elif r.kind == "gated":
        expected = [[want[0] // 2] + rest] * 2
    else:
        expected = [list(want)]
    for key, shape, exp in zip(keys, shapes, expected):
        if list(shape) != exp:
            raise TopologyError(files.file_of(key), f"tensor {key}", f"shape {list(shape)} does not match the "
                                                                     f"model's {exp} (for {name})")
