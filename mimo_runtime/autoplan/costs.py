"""Cost model: per-stage forward/backward seconds and per-rank bytes, from a preset's dimensions.

Estimates from FLOPs (a transformer layer does 8h^2 + 4hf + 4sh multiply-adds x 2 per token) over a
sustained rate, plus tensor-parallel all-reduces and context-parallel K/V exchange over a link of
given latency and bandwidth. `Hardware.flops_per_s` can be calibrated by a quick profile
(mimo_runtime.bench.calibrate); the rest of the model is arithmetic, so it runs at 16k ranks.
"""

from dataclasses import dataclass
from typing import Tuple

from mimo_runtime.topology import PresetDims

Shape = Tuple[int, int, int, int]  # (tp, cp, dp, pp)


@dataclass(frozen=True)
class Hardware:
    flops_per_s: float = 100e12  # sustained, per rank
    link_latency_s: float = 10e-6
    link_bytes_per_s: float = 25e9
    bytes_per_value: int = 4  # fp32 activations and weights (the CPU runtime's dtype)

    def transfer(self, nbytes: float) -> float:
        return self.link_latency_s + nbytes / self.link_bytes_per_s

    def all_reduce(self, nbytes: float, group: int) -> float:
        """Ring all-reduce: 2(g-1) steps of latency, 2(g-1)/g of the bytes over each link."""
        if group <= 1:
            return 0.0
        return 2 * (group - 1) * self.link_latency_s + 2 * (group - 1) / group * nbytes / self.link_bytes_per_s


@dataclass(frozen=True)
class ModuleDims:
    """What the cost model needs of one module, per sample."""

    hidden: int
    ffn: int
    heads: int
    layers: int
    seq: int  # attention span: tokens attending to one another
    tokens: int  # tokens per sample (seq x items for an encoder)
    extra_flops: float  # per sample, outside the layers: projection or embedding/logits
    extra_params: int  # outside the layers, all on one stage (projection: last; embeddings: first and last)
    out_hidden: int  # width of the rows this module hands on


def module_dims(preset: PresetDims, name: str) -> ModuleDims:
    lang = preset.language
    if name == "language":
        return ModuleDims(lang.hidden, lang.ffn_hidden, lang.heads, lang.layers, lang.seq_length, lang.seq_length,
                          2.0 * lang.seq_length * lang.hidden * lang.vocab_size, lang.hidden * lang.vocab_size,
                          lang.hidden)
    enc = preset.encoders[name]
    tokens = enc.tokens_per_item * enc.max_items
    proj = enc.hidden * lang.hidden + lang.hidden * lang.hidden  # the MLP projector
    return ModuleDims(enc.hidden, 4 * enc.hidden, enc.heads, enc.layers, enc.tokens_per_item, tokens,
                      2.0 * tokens * proj, proj, lang.hidden)


def layer_flops(d: ModuleDims) -> float:
    """Forward FLOPs of one layer for one sample."""
    per_token = 8 * d.hidden ** 2 + 4 * d.hidden * d.ffn + 4 * d.seq * d.hidden
    return 2.0 * per_token * d.tokens


def layer_params(d: ModuleDims) -> int:
    return 4 * d.hidden ** 2 + 2 * d.hidden * d.ffn + 9 * d.hidden + d.ffn


@dataclass(frozen=True)
class StageCost:
    forward: float  # seconds per microbatch
    backward: float
    reduce: float  # gradient all-reduce over dp x cp, once per step
    params: int  # on one rank
    trainable: int  # of those, trained (4 bytes weights + 4 grads + 8 Adam each)
    act_bytes: float  # activations one in-flight microbatch keeps on one rank
    send_bytes: float  # rows one rank sends downstream per microbatch


def stage_cost(d: ModuleDims, shape: Shape, stage: int, samples: int, hw: Hardware, *, language: bool,
               frozen: bool, frozen_all: bool) -> StageCost:
    """Costs of pipeline stage `stage` of a module with `shape`, `samples` per microbatch per replica."""
    tp, cp, _, pp = shape
    layers = d.layers // pp
    first, last = stage == 0, stage == pp - 1
    flops = layers * layer_flops(d) * samples
    if last:  # the logits, or the encoder's projection
        flops += d.extra_flops * samples
    compute = flops / (tp * cp) / hw.flops_per_s
    b = hw.bytes_per_value
    tokens = samples * d.tokens / cp
    tp_comm = layers * 2 * hw.all_reduce(tokens * d.hidden * b, tp)
    cp_comm = layers * (cp - 1) * hw.transfer(2 * tokens * d.hidden * b / tp) if cp > 1 else 0.0
    forward = compute + tp_comm + cp_comm
    # the projection lives on an encoder's last stage; tied embeddings on the language's first and last
    own_extra = d.extra_params // tp if (last or (language and first)) else 0
    params = layers * layer_params(d) // tp + own_extra
    if language or not (frozen or frozen_all):
        trainable, backward = params, 2 * compute + tp_comm + cp_comm
        act = layers * tokens * d.hidden * (34 + 5 * d.heads * d.seq / d.hidden) * b / 2 / tp
    elif frozen and not frozen_all and last:
        proj_compute = d.extra_flops * samples / tp / hw.flops_per_s
        trainable, backward = own_extra, 2 * proj_compute
        act = tokens * d.hidden * b
    else:
        trainable, backward, act = 0, 0.0, 0.0
    reduce = hw.all_reduce(trainable * b, shape[2] * cp)
    send = samples * d.tokens * (d.out_hidden if last else d.hidden) * b / cp
    return StageCost(forward, backward, reduce, params, trainable, act, send)


def rank_bytes(c: StageCost, inflight: int) -> float:
    """Peak bytes on one rank of a stage: weights, gradients and Adam state, then live activations."""
    frozen = c.params - c.trainable
    return 16 * c.trainable + 4 * frozen + inflight * c.act_bytes


def inflight_1f1b(depth: int, m: int, trains: bool) -> int:
    """Microbatches a 1F1B stage keeps alive: its warm-up plus one (upstream's rule), one if it only forwards."""
    return min(depth + 1, m) if trains else 1



def gib(nbytes: float) -> float:
    return nbytes / 2 ** 30
