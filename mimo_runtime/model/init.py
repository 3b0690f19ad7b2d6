"""Topology-independent initialization: a parameter's value depends only on (seed, global name).

Each parameter's full (unsharded) tensor is drawn from a generator seeded by a stable hash of the
seed and its canonical name, then this rank's TP shard is copied in (torchtitan's keyed parameter
init does the same). Canonical names are the colocated model's names: layer indices are global
(a pipeline stage's local layer i is layer offset+i), and the last stage's copy of a tied output
weight is named after the word embedding it mirrors. So a rank that builds a subset of modules,
layers or shards holds exactly the matching slice of the single-process reference model.
"""

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY

_LAYER = re.compile(r"^(?P<head>.*?\.layers\.)(?P<idx>\d+)(?P<tail>\..*)$")
_TIED_OUTPUT = "language_model.output_layer.weight"
_EMBEDDING = "language_model.embedding.word_embeddings.weight"
BASE_STD = 0.02


@dataclass(frozen=True)
class ModuleShard:
    """Where this rank sits in one module: its TP shard and pipeline stage."""

    tp_rank: int
    tp_size: int
    pp_rank: int
    pp_size: int
    num_layers: int

    @property
    def layer_offset(self) -> int:
        return self.pp_rank * (self.num_layers // self.pp_size)


def module_shards(model) -> Dict[str, ModuleShard]:
    """{module name: ModuleShard} for every module `model` (a MimoModel) holds."""
    out = {}
    for name in model.role.modules:
        pgs = model.module_pg_collection(name)
        if name == MIMO_LANGUAGE_MODULE_KEY:
            config = model.language_model.config
        else:
            # a user-written encoder may be a plain torch module: one "layer", no pipeline split
            config = getattr(next(iter(model.modality_submodules[name].encoders.values())), "config", None)
        layers = getattr(config, "num_layers", 1)
        out[name] = ModuleShard(_rank(pgs.tp), _size(pgs.tp), _rank(pgs.pp), _size(pgs.pp), layers)
    return out


def _module_of(local_name: str) -> str:
    if local_name.startswith("language_model."):
        return MIMO_LANGUAGE_MODULE_KEY
    if local_name.startswith("modality_submodules."):
        return local_name.split(".")[1]
    raise ValueError(f"parameter '{local_name}' belongs to no module")


def canonical_name(local_name: str, shard: ModuleShard, tied_output: bool) -> str:
    """The colocated model's name for a parameter named `local_name` on this rank."""
    if tied_output and local_name == _TIED_OUTPUT:
        return _EMBEDDING
    m = _LAYER.match(local_name)
    if m is None:
        return local_name
    return f"{m['head']}{int(m['idx']) + shard.layer_offset}{m['tail']}"


def global_parameters(model) -> Dict[str, Tuple[torch.nn.Parameter, Optional[int], int, int]]:
    """{canonical name: (parameter, partition_dim or None, tp_rank, tp_size)} for this rank."""
    shards = module_shards(model)
    lm = model.language_model
    tied = lm is not None and lm.share_embeddings_and_output_weights
    out = {}
    for local, param in model.named_parameters():
        module = _module_of(local)
        shard = shards[module]
        pdim = param.partition_dim if getattr(param, "tensor_model_parallel", False) else None
        out[canonical_name(local, shard, tied)] = (param, pdim, shard.tp_rank, shard.tp_size)
    return out


def shard_of(full: torch.Tensor, partition_dim: Optional[int], tp_rank: int, tp_size: int) -> torch.Tensor:
    """TP rank `tp_rank`'s contiguous slice of `full` along `partition_dim` (None: replicated)."""
    if partition_dim is None or tp_size == 1:
        return full
    if full.size(partition_dim) % tp_size:
        raise ValueError(f"tp_size {tp_size} does not divide dim {partition_dim} of shape {tuple(full.shape)}")
    step = full.size(partition_dim) // tp_size
    return full.narrow(partition_dim, tp_rank * step, step)


def full_shape(param: torch.Tensor, partition_dim: Optional[int], tp_size: int) -> Tuple[int, ...]:
    shape = list(param.shape)
    if partition_dim is not None:
        shape[partition_dim] *= tp_size
    return tuple(shape)


def name_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for (seed, name): the same in every process and Python version."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def initial_value(seed: int, name: str, shape: Sequence[int], num_layers: int) -> torch.Tensor:
    """The full initial tensor of parameter `name`; megatron's default scheme, keyed by name."""
    if name.endswith("bias"):
        return torch.zeros(shape)
    if "layernorm" in name or name.endswith("norm.weight"):
        return torch.ones(shape)
    if name.endswith(("patch_embed.weight", "conv1.weight", "conv2.weight")):
        # raw pixels / features in: unit-variance outputs need 1/sqrt(fan_in)
        std = math.prod(shape[1:]) ** -0.5
    elif ".layers." in name and name.endswith(("linear_proj.weight", "linear_fc2.weight")):
        std = BASE_STD / math.sqrt(2.0 * num_layers)  # megatron's scaled init of residual outputs
    else:
        std = BASE_STD
    g = torch.Generator().manual_seed(name_seed(seed, name))
    return torch.randn(tuple(shape), generator=g) * std


@torch.no_grad()
def init_parameters(model, seed: int) -> None:
    """Fill every parameter of `model` with its shard of the keyed full tensor."""
    shards = module_shards(model)
    for name, (param, pdim, tp_rank, tp_size) in global_parameters(model).items():
        layers = shards[_module_of(name)].num_layers
        full = initial_value(seed, name, full_shape(param, pdim, tp_size), layers)
        param.copy_(shard_of(full, pdim, tp_rank, tp_size))


def _rank(group) -> int:
    return group.rank() if group is not None else 0


def _size(group) -> int:
    return group.size() if group is not None else 1
