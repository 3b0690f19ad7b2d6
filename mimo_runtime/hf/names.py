"""HF tensor names and layouts <-> megatron parameters (pure: names, shapes and index ranges;
torch only to fuse and split tensors).

HF keys are first normalized to a section and a rest (`lm.`, `vision.`, `projector.`), whatever the
checkpoint's prefix: llava-hf Hub (`vision_tower.vision_model.*`, `language_model.model.*`,
`multi_modal_projector.*`), transformers 5.x (`vision_tower.*`, `model.language_model.*`), separately
saved parts (`model.*`, `vision_model.*`, or no prefix at all). A Whisper directory is read as section `audio.` on
its own (its keys would collide with the others': `model.encoder.*`, `encoder.*` or bare), and its
decoder is ignored. Each megatron parameter then has a recipe:
- copy:  one HF tensor, same layout;
- qkv:   megatron's `linear_qkv` is grouped per query group (for each group: its q heads, then its
         k head, then its v head), and TP splits whole groups;
- gated: megatron's `linear_fc1` of SwiGLU is [gate; up] on every TP rank (each rank: its gate
         rows, then its up rows);
- qkv_no_k: a fused qkv bias whose HF attention has no k bias (Whisper's k_proj): q and v are
         read, the k rows are zeros. A k bias adds the same q.b to every key's score of a query,
         which softmax ignores: the zeros never change the output, and export drops them.
"""

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

# (key prefix, section); the longest matching prefix wins
PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("language_model.model.", "lm."), ("model.language_model.", "lm."), ("language_model.lm_head.", "lm.lm_head."),
    ("lm_head.", "lm.lm_head."), ("language_model.", "lm."),
    ("model.vision_tower.vision_model.", "vision."), ("vision_tower.vision_model.", "vision."),
    ("model.vision_tower.", "vision."), ("vision_tower.", "vision."), ("vision_model.", "vision."),
    ("model.multi_modal_projector.", "projector."), ("multi_modal_projector.", "projector."),
    ("model.", "lm."),
)
_BY_LENGTH = sorted(PREFIXES, key=lambda p: -len(p[0]))


def normalize(key: str) -> Optional[str]:
    """The section-prefixed name of an HF key (None for keys of no known section)."""
    for prefix, section in _BY_LENGTH:
        if key.startswith(prefix):
            return section + key[len(prefix):]
    return None


AUDIO = "audio"
AUDIO_PREFIXES = ("model.encoder.", "encoder.")  # WhisperForConditionalGeneration, WhisperModel
AUDIO_SKIP = ("model.decoder.", "decoder.", "proj_out.")  # Whisper's text decoder: never loaded


def audio_name(key: str) -> Optional[str]:
    """The `audio.` name of a Whisper key (None for its decoder's); a WhisperEncoder saved alone
    has bare keys (`conv1.weight`, `layers.0.*`)."""
    if key.startswith(AUDIO_SKIP):
        return None
    for prefix in AUDIO_PREFIXES:
        if key.startswith(prefix):
            return f"{AUDIO}.{key[len(prefix):]}"
    return f"{AUDIO}.{key}"


def key_index(keys: Iterable[str], fallback: Optional[str] = None) -> Dict[str, str]:
    """{normalized name: the checkpoint's key}. `fallback`: the section of keys without a known
    prefix (transformers 5.x saves a CLIPVisionModel as bare `embeddings.*`, `encoder.*`);
    `audio`: the directory is a Whisper's (audio_name)."""
    if fallback == AUDIO:
        return {name: key for name, key in ((audio_name(k), k) for k in keys) if name is not None}
    out = {}
    for key in keys:
        name = normalize(key)
        if name is None and fallback is not None:
            name = f"{fallback}.{key}"
        if name is not None:
            out.setdefault(name, key)
    return out


@dataclass(frozen=True)
class Recipe:
    """How one megatron parameter is made of HF tensors (normalized names)."""

    kind: str  # copy | qkv | gated | qkv_no_k
    sources: Tuple[str, ...]


LANG_PREFIX = "language_model."
_LANG_LAYER = {
    "input_layernorm.weight": ("copy", ("input_layernorm.weight",)),
    "self_attention.linear_qkv.weight": ("qkv", ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                 "self_attn.v_proj.weight")),
    "self_attention.linear_qkv.bias": ("qkv", ("self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                               "self_attn.v_proj.bias")),
    "self_attention.linear_proj.weight": ("copy", ("self_attn.o_proj.weight",)),
    "pre_mlp_layernorm.weight": ("copy", ("post_attention_layernorm.weight",)),
    "mlp.linear_fc1.weight": ("gated", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    "mlp.linear_fc2.weight": ("copy", ("mlp.down_proj.weight",)),
}
_LANG_TOP = {
    "embedding.word_embeddings.weight": "embed_tokens.weight",
    "decoder.final_layernorm.weight": "norm.weight",
    "output_layer.weight": "lm_head.weight",
}
_VIT_LAYER = {
    "input_layernorm": ("copy", "layer_norm1"),
    "self_attention.linear_qkv": ("qkv", None),
    "self_attention.linear_proj": ("copy", "self_attn.out_proj"),
    "pre_mlp_layernorm": ("copy", "layer_norm2"),
    "mlp.linear_fc1": ("copy", "mlp.fc1"),
    "mlp.linear_fc2": ("copy", "mlp.fc2"),
}
_VIT_TOP = {
    "patch_embedding.weight": "embeddings.patch_embedding.weight",
    "patch_embedding.bias": "embeddings.patch_embedding.bias",
    "position_embedding": "embeddings.position_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "pre_layrnorm.weight": "pre_layrnorm.weight",
    "pre_layrnorm.bias": "pre_layrnorm.bias",
}
PROJECTOR_LAYERS = {"linear_fc1": "linear_1", "linear_fc2": "linear_2"}
AUDIO_KEY = "audio_tower"  # families/whisper.py's WHISPER_KEY (names.py imports no megatron)
_WHISPER_TOP = {
    "conv1.weight": "conv1.weight", "conv1.bias": "conv1.bias", "conv2.weight": "conv2.weight",
    "conv2.bias": "conv2.bias", "embed_positions": "embed_positions.weight",
    "block.final_layernorm.weight": "layer_norm.weight", "block.final_layernorm.bias": "layer_norm.bias",
}
_WHISPER_LAYER = {
    "input_layernorm": "self_attn_layer_norm",
    "self_attention.linear_proj": "self_attn.out_proj",
    "pre_mlp_layernorm": "final_layer_norm",
    "mlp.linear_fc1": "fc1",
    "mlp.linear_fc2": "fc2",
}
_LAYER = re.compile(r"^(?:decoder|block)\.layers\.(\d+)\.(.+)$")
_SUB = re.compile(r"^modality_submodules\.([^.]+)\.(encoders\.[^.]+|input_projections\.0\.encoder)\.(.+)$")


def recipe(name: str) -> Optional[Recipe]:
    """The recipe of a megatron canonical parameter name (model/init.py's names), None when the
    parameter has no HF counterpart (it then keeps its keyed init)."""
    if name.startswith(LANG_PREFIX):
        rest = name[len(LANG_PREFIX):]
        if rest in _LANG_TOP:
            return Recipe("copy", (f"lm.{_LANG_TOP[rest]}",))
        m = _LAYER.match(rest)
        if m and m[2] in _LANG_LAYER:
            kind, parts = _LANG_LAYER[m[2]]
            return Recipe(kind, tuple(f"lm.layers.{m[1]}.{p}" for p in parts))
        return None
    m = _SUB.match(name)
    if m is None:
        return None
    part, rest = m[2], m[3]
    if part.startswith("input_projections"):
        layer, _, leaf = rest.partition(".")
        return Recipe("copy", (f"projector.{PROJECTOR_LAYERS[layer]}.{leaf}",)) if layer in PROJECTOR_LAYERS else None
    if part == f"encoders.{AUDIO_KEY}":
        return _whisper_recipe(rest)
    if rest in _VIT_TOP:
        return Recipe("copy", (f"vision.{_VIT_TOP[rest]}",))
    lm = _LAYER.match(rest)
    if lm is None:
        return None
    module, _, leaf = lm[2].rpartition(".")
    if module not in _VIT_LAYER:
        return None
    kind, hf = _VIT_LAYER[module]
    base = f"vision.encoder.layers.{lm[1]}."
    if kind == "qkv":
        return Recipe("qkv", tuple(f"{base}self_attn.{p}_proj.{leaf}" for p in "qkv"))
    return Recipe("copy", (f"{base}{hf}.{leaf}",))


def _whisper_recipe(rest: str) -> Optional[Recipe]:
    if rest in _WHISPER_TOP:
        return Recipe("copy", (f"{AUDIO}.{_WHISPER_TOP[rest]}",))
    lm = _LAYER.match(rest)
    if lm is None:
        return None
    module, _, leaf = lm[2].rpartition(".")
    if leaf not in ("weight", "bias"):
        return None  # e.g. transformer-engine's norms fused into linear_qkv
    base = f"{AUDIO}.layers.{lm[1]}."
    if module == "self_attention.linear_qkv":
        if leaf == "bias":
            return Recipe("qkv_no_k", (f"{base}self_attn.q_proj.bias", f"{base}self_attn.v_proj.bias"))
        return Recipe("qkv", tuple(f"{base}self_attn.{p}_proj.{leaf}" for p in "qkv"))
    return Recipe("copy", (f"{base}{_WHISPER_LAYER[module]}.{leaf}",)) if module in _WHISPER_LAYER else None


# ---- layouts -------------------------------------------------------------------------------------

def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """HF q (heads*d, ...), k and v (groups*d, ...) -> megatron's grouped linear_qkv rows."""
    rest = q.shape[1:]
    d = k.size(0) // groups
    qg = q.reshape(groups, -1, *rest)
    return torch.cat([qg, k.reshape(groups, d, *rest), v.reshape(groups, d, *rest)], dim=1).reshape(-1, *rest)


def split_qkv(fused: torch.Tensor, heads: int, groups: int, head_dim: int):
    """megatron's grouped linear_qkv rows -> HF (q, k, v)."""
    rest = fused.shape[1:]
    per = heads // groups
    g = fused.reshape(groups, (per + 2) * head_dim, *rest)
    q, k, v = g.split([per * head_dim, head_dim, head_dim], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def qkv_ranges(heads: int, groups: int, head_dim: int, tp_rank: int, tp: int) -> List[Tuple[int, int]]:
    """Rows of HF q, k and v that TP rank `tp_rank` holds: its whole query groups."""
    if groups % tp:
        raise ValueError(f"tp={tp} does not divide the {groups} query groups (kv heads)")
    per, local = heads // groups, groups // tp
    g0 = tp_rank * local
    return [(g0 * per * head_dim, (g0 + local) * per * head_dim), (g0 * head_dim, (g0 + local) * head_dim),
            (g0 * head_dim, (g0 + local) * head_dim)]


def even_range(size: int, tp_rank: int, tp: int) -> Tuple[int, int]:
    """TP rank `tp_rank`'s contiguous share of `size` rows (or columns)."""
    if size % tp:
        raise ValueError(f"tp={tp} does not divide {size}")
    step = size // tp
    return tp_rank * step, (tp_rank + 1) * step


def export_tensors(name: str, full: torch.Tensor, heads: int = 0, groups: int = 0,
                   head_dim: int = 0) -> Dict[str, torch.Tensor]:
    """{normalized HF name: tensor} of one full (unsharded) megatron parameter."""
    r = recipe(name)
    if r is None:
        return {}
    if r.kind == "copy":
        return {r.sources[0]: full}
    if r.kind == "qkv":
        return dict(zip(r.sources, split_qkv(full, heads, groups, head_dim)))
    if r.kind == "qkv_no_k":
        q, _, v = split_qkv(full, heads, groups, head_dim)
        return dict(zip(r.sources, (q, v)))
    gate, up = full.chunk(2, dim=0)
    return dict(zip(r.sources, (gate, up)))


def read_plan(r: Recipe, shapes: Sequence[Sequence[int]], partition_dim: Optional[int], tp_rank: int, tp: int,
              heads: int = 0, groups: int = 0) -> List[Tuple[str, int, int, int]]:
    """[(normalized HF name, dim, start, stop)]: the slices of the HF tensors (full shapes `shapes`)
    that make TP rank `tp_rank`'s shard of the parameter, in the order they are combined."""
    if r.kind in ("qkv", "qkv_no_k"):
        head_dim = shapes[1][0] // groups
        ranges = qkv_ranges(heads, groups, head_dim, tp_rank, tp)
        return [(src, 0, a, b) for src, (a, b) in zip(r.sources, ranges if r.kind == "qkv" else ranges[::2])]
    if r.kind == "gated":
        return [(src, 0, *even_range(shape[0], tp_rank, tp)) for src, shape in zip(r.sources, shapes)]
    if partition_dim is None or tp == 1:
        return [(r.sources[0], 0, 0, shapes[0][0] if shapes[0] else 0)]
    return [(r.sources[0], partition_dim, *even_range(shapes[0][partition_dim], tp_rank, tp))]


def combine(r: Recipe, parts: Sequence[torch.Tensor], groups_local: int = 0) -> torch.Tensor:
    """This rank's shard from the slices `read_plan` named."""
    if r.kind == "qkv":
        return fuse_qkv(*parts, groups_local)
    if r.kind == "qkv_no_k":
        q, v = parts
        return fuse_qkv(q, torch.zeros_like(v), v, groups_local)
    if r.kind == "gated":
        return torch.cat(list(parts), dim=0)
    return parts[0]
