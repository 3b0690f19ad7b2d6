"""Topology-independent initialization: a parameter's value depends only on (seed, global name).

Elements 2j and 2j+1 (row-major) of a parameter's full (unsharded) tensor are the Box-Muller pair
of standard normals computed from the j-th 64-bit word of a counter-based generator (numpy's
Philox) keyed on a stable hash of the seed and the canonical name, times the parameter's std.
A counter-based generator can start at any word, so a rank draws only the elements of its own TP
shard (one run of words per contiguous piece of the shard), never the full tensor, and the shard
equals that slice of the full tensor whatever the topology (torchtitan's keyed parameter init
keys on the name for the same reason). Values are drawn on CPU (float32) and copied to the
parameter's device and dtype, so CUDA and CPU agree.

Canonical names are the colocated model's names: layer indices are global (a pipeline stage's local
layer i is layer offset+i; chunk c of an interleaved stage, `language_chunks.{c-1}.*`, holds virtual
stage c * pp + pp_rank and is named like the language model's own layers), and the last stage's copy of a tied output weight is named after the
word embedding it mirrors. So a rank that builds a subset of modules, layers or shards holds exactly
the matching slice of the single-process reference model.

A gated MLP's (SwiGLU's) `linear_fc1` is `[gate; up]` in full, and megatron keeps `[gate shard;
up shard]` on each TP rank: its partition dim is `HalvesDim(0)`, which `shard_of` splits per half.
"""

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY

_LAYER = re.compile(r"^(?P<head>.*?\.layers\.)(?P<idx>\d+)(?P<tail>\..*)$")
_CHUNK_NAME = re.compile(r"^language_chunks\.(?P<chunk>\d+)\.")
_ENCODER_CHUNK_NAME = re.compile(r"^modality_chunks\.(?P<module>[^.]+)\.(?P<chunk>\d+)\.")
_TIED_OUTPUT = "language_model.output_layer.weight"
_EMBEDDING = "language_model.embedding.word_embeddings.weight"
BASE_STD = 0.02
_CHUNK = 1 << 19  # words drawn at once: bounds the temporaries to a few MB whatever the shard


class HalvesDim(int):
    """Partition dim 0 of a tensor made of `halves` stacked parts that TP splits one by one
    (a gated fc1's [gate; up]); compares and indexes as the plain int."""

    halves = 2


@dataclass(frozen=True)
class ModuleShard:
    """Where this rank sits in one module: its TP shard and pipeline stage."""

    tp_rank: int
    tp_size: int
    pp_rank: int
    pp_size: int
    num_layers: int
    vpp: int = 1  # virtual pipeline chunks per stage (megatron's interleaving)

    @property
    def layer_offset(self) -> int:
        return self.chunk_offset(0)

    def chunk_offset(self, chunk: int) -> int:
        """Global index of the first layer of `chunk`: virtual stage chunk * pp + pp_rank."""
        return (chunk * self.pp_size + self.pp_rank) * (self.num_layers // (self.pp_size * self.vpp))


def module_shards(model) -> Dict[str, ModuleShard]:
    """{module name: ModuleShard} for every module `model` (a MimoModel) holds."""
    out = {}
    for name in model.role.modules:
        pgs = model.module_pg_collection(name)
        vpp = 1
        if name == MIMO_LANGUAGE_MODULE_KEY:
            config = model.language_model.config
            vpp = getattr(model, "num_chunks", 1)
        else:
            # a user-written encoder may be a plain torch module: one "layer", no pipeline split
            config = getattr(next(iter(model.modality_submodules[name].encoders.values())), "config", None)
            vpp = len(model.encoder_chunks(name)) if hasattr(model, "encoder_chunks") else 1
        layers = getattr(config, "num_layers", 1)
        out[name] = ModuleShard(_rank(pgs.tp), _size(pgs.tp), _rank(pgs.pp), _size(pgs.pp), layers, vpp)
    return out


def _module_of(local_name: str) -> str:
    if local_name.startswith(("language_model.", "language_chunks.")):
        return MIMO_LANGUAGE_MODULE_KEY
    if local_name.startswith(("modality_submodules.", "modality_chunks.")):
        return local_name.split(".")[1]
    raise ValueError(f"parameter '{local_name}' belongs to no module")


def canonical_name(local_name: str, shard: ModuleShard, tied_output: bool) -> str:
    """The colocated model's name for a parameter named `local_name` on this rank."""
    chunk = 0
    c = _CHUNK_NAME.match(local_name)
    if c is not None:
        chunk = int(c["chunk"]) + 1
        local_name = "language_model." + local_name[c.end():]
    e = _ENCODER_CHUNK_NAME.match(local_name)
    if e is not None:  # chunk c of an interleaved encoder: named like the encoder's own layers
        chunk = int(e["chunk"]) + 1
        local_name = f"modality_submodules.{e['module']}." + local_name[e.end():]
    if tied_output and local_name == _TIED_OUTPUT:
        return _EMBEDDING
    m = _LAYER.match(local_name)
    if m is None:
        return local_name
    return f"{m['head']}{int(m['idx']) + shard.chunk_offset(chunk)}{m['tail']}"


def global_parameters(model) -> Dict[str, Tuple[torch.nn.Parameter, Optional[int], int, int]]:
    """{canonical name: (parameter, partition_dim or None, tp_rank, tp_size)} for this rank."""
    shards = module_shards(model)
    lm = model.language_model
    tied = lm is not None and lm.share_embeddings_and_output_weights
    gated = _gated_fc1(model)
    out = {}
    for local, param in model.named_parameters():
        module = _module_of(local)
        shard = shards[module]
        pdim = param.partition_dim if getattr(param, "tensor_model_parallel", False) else None
        if id(param) in gated and pdim == 0:
            pdim = HalvesDim(0)
        out[canonical_name(local, shard, tied)] = (param, pdim, shard.tp_rank, shard.tp_size)
    return out


def _gated_fc1(model) -> set:
    """ids of the fc1 parameters of every MLP whose config has gated_linear_unit."""
    from megatron.core.transformer.mlp import MLP

    return {id(p) for m in model.modules() if isinstance(m, MLP) and m.config.gated_linear_unit
            for p in m.linear_fc1.parameters(recurse=False)}


def shard_of(full: torch.Tensor, partition_dim: Optional[int], tp_rank: int, tp_size: int) -> torch.Tensor:
    """TP rank `tp_rank`'s slice of `full` along `partition_dim` (None: replicated): contiguous, or
    for a HalvesDim the concatenation of that rank's slice of each half."""
    if partition_dim is None or tp_size == 1:
        return full
    halves = getattr(partition_dim, "halves", 1)
    if full.size(partition_dim) % (tp_size * halves):
        raise ValueError(f"tp_size {tp_size} does not divide dim {partition_dim} of shape {tuple(full.shape)}"
                         + (f" into {halves} halves" if halves > 1 else ""))
    parts = [p.narrow(partition_dim, tp_rank * (p.size(partition_dim) // tp_size), p.size(partition_dim) // tp_size)
             for p in full.chunk(halves, dim=partition_dim)]
    return parts[0] if halves == 1 else torch.cat(parts, dim=partition_dim)


def full_shape(param: torch.Tensor, partition_dim: Optional[int], tp_size: int) -> Tuple[int, ...]:
    shape = list(param.shape)
    if partition_dim is not None:
        shape[partition_dim] *= tp_size
    return tuple(shape)


def name_key(seed: int, name: str) -> int:
    """A stable 128-bit Philox key for (seed, name): the same in every process and Python version."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:16], "little")


def _std(name: str, shape: Sequence[int], num_layers: int) -> float:
    """megatron's default scheme; `shape` is the full tensor's."""
    if name.endswith(("patch_embed.weight", "conv1.weight", "conv2.weight")):
        # raw pixels / features in: unit-variance outputs need 1/sqrt(fan_in)
        return math.prod(shape[1:]) ** -0.5
    if ".layers." in name and name.endswith(("linear_proj.weight", "linear_fc2.weight")):
        return BASE_STD / math.sqrt(2.0 * num_layers)  # megatron's scaled init of residual outputs
    return BASE_STD


def shard_runs(shape: Sequence[int], partition_dim: Optional[int], tp_rank: int,
               tp_size: int) -> List[Tuple[int, int]]:
    """(first flat index, length) of the pieces of the full tensor `shape` that make up TP rank
    `tp_rank`'s shard, in the shard's own row-major order (what `shard_of` returns, flattened)."""
    numel = math.prod(shape)
    if partition_dim is None or tp_size == 1:
        return [(0, numel)]
    halves = getattr(partition_dim, "halves", 1)
    outer, inner = math.prod(shape[:partition_dim]), math.prod(shape[partition_dim + 1:])
    part = shape[partition_dim] // halves  # each half's size along the dim
    step = part // tp_size
    if shape[partition_dim] % (halves * tp_size):
        raise ValueError(f"tp_size {tp_size} does not divide dim {partition_dim} of shape {tuple(shape)}")
    # dim 0 of a HalvesDim is outermost (outer == 1): the rank's slice of each half, one after the other
    return [((o * shape[partition_dim] + h * part + tp_rank * step) * inner, step * inner)
            for o in range(outer) for h in range(halves)]


def _words(key: int, first: int, count: int) -> Iterator[np.ndarray]:
    """Philox words first .. first+count-1 of stream `key`, in chunks; counter c yields words 4c..4c+3."""
    gen = np.random.Philox(key=key, counter=first // 4)
    skip = first % 4
    while count > 0:
        n = min(count, _CHUNK)
        w = gen.random_raw(n + skip)[skip:]
        skip = 0
        count -= n
        yield w


def _normal_pairs(words: np.ndarray) -> np.ndarray:
    """Box-Muller over the two 32-bit halves of each word, in float32: word j gives elements 2j
    (cosine) and 2j+1 (sine), interleaved."""
    u1 = ((words >> np.uint64(32)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -32)  # (0, 1]
    angle = words.astype(np.uint32).astype(np.float32) * np.float32(2.0 ** -32 * 2.0 * math.pi)
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1).reshape(-1)


def _draw(key: int, start: int, length: int, out: np.ndarray) -> None:
    """Standard normals at flat indices start .. start+length-1 into `out`, drawing only their words."""
    first, drop, at = start // 2, start % 2, 0
    for words in _words(key, first, (start + length + 1) // 2 - first):
        values = _normal_pairs(words)[drop:]
        drop = 0
        n = min(len(values), length - at)
        out[at:at + n] = values[:n]
        at += n


def shard_value(seed: int, name: str, shape: Sequence[int], num_layers: int, partition_dim: Optional[int] = None,
                tp_rank: int = 0, tp_size: int = 1) -> torch.Tensor:
    """TP rank `tp_rank`'s shard of parameter `name`'s initial value (full `shape`), drawn alone."""
    local = list(shape)
    if partition_dim is not None:
        local[partition_dim] //= tp_size
    if name.endswith("bias"):
        return torch.zeros(local)
    if "layernorm" in name or name.endswith("norm.weight"):
        return torch.ones(local)
    std, key = _std(name, shape, num_layers), name_key(seed, name)
    out = np.empty(math.prod(local), dtype=np.float32)
    at = 0
    for start, length in shard_runs(shape, partition_dim, tp_rank, tp_size):
        _draw(key, start, length, out[at:at + length])
        at += length
    out *= np.float32(std)
    return torch.from_numpy(out).view(local)


def initial_value(seed: int, name: str, shape: Sequence[int], num_layers: int) -> torch.Tensor:
    """The full initial tensor of parameter `name` (every shard is a slice of it)."""
    return shard_value(seed, name, shape, num_layers)


@torch.no_grad()
def init_parameters(model, seed: int) -> None:
    """Fill every parameter of `model` with its shard of the keyed full tensor, drawing only that shard."""
    shards = module_shards(model)
    for name, (param, pdim, tp_rank, tp_size) in global_parameters(model).items():
        layers = shards[_module_of(name)].num_layers
        param.copy_(shard_value(seed, name, full_shape(param, pdim, tp_size), layers, pdim, tp_rank, tp_size))


def _rank(group) -> int:
    return group.rank() if group is not None else 0


def _size(group) -> int:
    return group.size() if group is not None else 1
