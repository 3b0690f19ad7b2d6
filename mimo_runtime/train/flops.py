"""Model FLOPs per training step, from the architecture (pure; no torch).

Counts the matrix multiplies, 2 FLOPs per multiply-add, as Megatron's MFU accounting does:
per transformer layer and token, QKV (grouped-query aware), the attention scores and their
weighted sum over the full sequence (causal masking not discounted), the output projection and
the MLP (three matrices when gated); per language token also the output layer; per encoder token
the two-layer MLP projector into the language model. Patch/conv stems, norms and softmax are left
out (they are a few percent at most). A training step costs 3x the forward (the backward computes
gradients of inputs and of weights); a frozen encoder's layers cost only their forward. Padding
positions count: the hardware computes them.
"""

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

from mimo_runtime.topology.presets import PRESETS, PresetDims

TRAIN_FACTOR = 3  # forward + backward (inputs and weights)


@dataclass(frozen=True)
class LayerDims:
    hidden: int
    heads: int
    ffn_hidden: int
    query_groups: int = 0  # 0: one per head (multi-head attention)
    gated: bool = False


def layer_forward_flops(d: LayerDims, tokens: int, seq: int) -> int:
    """Forward FLOPs of one transformer layer over `tokens` tokens in sequences of `seq` tokens."""
    kv = d.hidden * (d.query_groups or d.heads) // d.heads  # width of K (and of V)
    qkv = 2 * d.hidden * (d.hidden + 2 * kv)
    attention = 2 * 2 * seq * d.hidden  # Q K^T and the weighted sum of V, per query token
    out = 2 * d.hidden * d.hidden
    mlp = 2 * d.hidden * d.ffn_hidden * (3 if d.gated else 2)
    return tokens * (qkv + attention + out + mlp)


def language_step_flops(d: LayerDims, layers: int, vocab: int, samples: int, seq: int) -> int:
    """Training FLOPs of the language model over `samples` sequences of `seq` tokens."""
    tokens = samples * seq
    return TRAIN_FACTOR * (layers * layer_forward_flops(d, tokens, seq) + 2 * tokens * d.hidden * vocab)


def encoder_step_flops(d: LayerDims, layers: int, language_hidden: int, items: int, tokens_per_item: int,
                       frozen: bool) -> int:
    """Training FLOPs of an encoder and its projector over `items` items of `tokens_per_item` tokens each."""
    tokens = items * tokens_per_item
    encoder = layers * layer_forward_flops(d, tokens, tokens_per_item) * (1 if frozen else TRAIN_FACTOR)
    projector = TRAIN_FACTOR * 2 * tokens * (d.hidden * language_hidden + language_hidden * language_hidden)
    return encoder + projector


def preset_step_flops(preset: str, samples: int, items: Mapping[str, int],
                      frozen: Mapping[str, bool]) -> Optional[Dict[str, int]]:
    """{module: training FLOPs of one step} of a preset model over `samples` sequences carrying
    `items[encoder]` items; None for a model that is not a preset (its architecture is the user's)."""
    dims: Optional[PresetDims] = PRESETS.get(preset) if isinstance(preset, str) else None
    if dims is None:
        return None
    lang = dims.language
    out = {"language": language_step_flops(LayerDims(lang.hidden, lang.heads, lang.ffn_hidden), lang.layers,
                                           lang.vocab_size, samples, lang.seq_length)}
    for name, enc in dims.encoders.items():
        layer = LayerDims(enc.hidden, enc.heads, 4 * enc.hidden)  # presets' encoder MLPs are 4x wide
        out[name] = encoder_step_flops(layer, enc.layers, lang.hidden, items.get(name, 0), enc.tokens_per_item,
                                       frozen.get(name, False))
    return out


def mfu(flops: float, seconds: float, ranks: int, peak_tflops: float) -> float:
    """Model FLOPs utilization: achieved FLOPs/s over the peak of the `ranks` devices that did them."""
    return flops / seconds / (ranks * peak_tflops * 1e12)
