"""Cost model: per-stage forward/backward seconds and per-rank bytes, from a preset's dimensions.

Estimates from FLOPs (a transformer layer does 8h^2 + 4hf + 4sh multiply-adds x 2 per token) over a
sustained rate, plus tensor-parallel all-reduces and context-parallel K/V exchange over a link of
given latency and bandwidth. `Hardware.flops_per_s` can be calibrated by a quick profile
(mimo_runtime.bench.calibrate); the rest of the model is arithmetic, so it runs at 16k ranks.
Parameters and activations come from the per-family memory model (autoplan/memory.py).
"""

from dataclasses import dataclass
from typing import Tuple

from mimo_runtime.autoplan import memory
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

    @property
    def precision(self) -> memory.Precision:
        b = self.bytes_per_value
        return memory.Precision(weight=b, grad=b, optimizer=8, activation=b)

    def all_reduce(self, nbytes: float, group: int) -> float:
        """Ring all-reduce: 2(g-1) steps of latency, 2(g-1)/g of the bytes over each link."""
        if group <= 1:
            return 0.0
        return 2 * (group - 1) * self.link_latency_s + 2 * (group - 1) / group * nbytes / self.link_bytes_per_s


@dataclass(frozen=True)
class ModuleDims:
    """What the cost model needs of one module, per sample."""

    hidden: int
    ffn: int  # an MLP's matmul width: 1.5 x ffn_hidden for SwiGLU (gate, up and down matrices)
    heads: int
    layers: int
    seq: int  # attention span: tokens attending to one another
    tokens: int  # tokens per sample (seq x items for an encoder)
    extra_flops: float  # per sample, outside the layers: projection or embedding/logits
    out_hidden: int  # width of the rows this module hands on
    preset: PresetDims  # for the memory model
    name: str


def module_dims(preset: PresetDims, name: str) -> ModuleDims:
    lang = preset.language
    if name == "language":
        ffn = lang.ffn_hidden * 3 // 2 if lang.gated else lang.ffn_hidden
        return ModuleDims(lang.hidden, ffn, lang.heads, lang.layers, lang.seq_length, lang.seq_length,
                          2.0 * lang.seq_length * lang.hidden * lang.vocab_size, lang.hidden, preset, name)
    enc = preset.encoders[name]
    tokens = enc.tokens_per_item * enc.max_items
    proj = enc.hidden * lang.hidden + lang.hidden * lang.hidden  # the MLP projector
    return ModuleDims(enc.hidden, enc.ffn, enc.heads, enc.layers, enc.tokens_per_item, tokens,
                      2.0 * tokens * proj, lang.hidden, preset, name)


def layer_flops(d: ModuleDims) -> float:
    """Forward FLOPs of one layer for one sample."""
    per_token = 8 * d.hidden ** 2 + 4 * d.hidden * d.ffn + 4 * d.seq * d.hidden
    return 2.0 * per_token * d.tokens


@dataclass(frozen=True)
class StageCost:
    forward: float  # seconds per microbatch
    backward: float
    reduce: float  # gradient all-reduce over dp x cp, once per step
    params: int  # on one rank
    trainable: int  # of those, trained (weights + gradients + Adam state each)
    act_bytes: float  # activations one in-flight microbatch keeps on one rank
    send_bytes: float  # rows one rank sends downstream per microbatch
    precision: memory.Precision


def stage_cost(d: ModuleDims, shape: Shape, stage: int, samples: int, hw: Hardware, *, language: bool,
               frozen: bool, frozen_all: bool) -> StageCost:
    """Costs of pipeline stage `stage` of a module with `shape`, `samples` per microbatch per replica."""
    tp, cp, _, pp = shape
    layers = d.layers // pp
    last = stage == pp - 1
    flops = layers * layer_flops(d) * samples
    if last:  # the logits, or the encoder's projection
        flops += d.extra_flops * samples
    compute = flops / (tp * cp) / hw.flops_per_s
    b = hw.bytes_per_value
    tokens = samples * d.tokens / cp
    tp_comm = layers * 2 * hw.all_reduce(tokens * d.hidden * b, tp)
    cp_comm = layers * (cp - 1) * hw.transfer(2 * tokens * d.hidden * b / tp) if cp > 1 else 0.0
    forward = compute + tp_comm + cp_comm
    trains = "all" if language or not (frozen or frozen_all) else "projection" if frozen and not frozen_all else "none"
    mem = memory.stage_memory(d.preset, d.name, shape, stage, samples, 1, trains, precision=hw.precision)
    params = round(mem.params / hw.precision.weight)
    trainable = round(mem.grads / hw.precision.grad)
    if trains == "all":
        backward = 2 * compute + tp_comm + cp_comm
    elif trains == "projection" and last:
        backward = 2 * d.extra_flops * samples / tp / hw.flops_per_s
    else:
        backward = 0.0
    reduce = hw.all_reduce(trainable * b, shape[2] * cp)
    send = samples * d.tokens * (d.out_hidden if last else d.hidden) * b / cp
    return StageCost(forward, backward, reduce, params, trainable, mem.activations, send, hw.precision)


def rank_bytes(c: StageCost, inflight: int) -> float:
    """Peak bytes on one rank of a stage: weights, gradients and Adam state, then live activations."""
    p = c.precision
    return p.weight * c.params + (p.grad + p.optimizer) * c.trainable + inflight * c.act_bytes


def inflight_1f1b(depth: int, m: int, trains: bool) -> int:
    """Microbatches a 1F1B stage keeps alive: its warm-up plus one (upstream's rule), one if it only forwards."""
    return min(depth + 1, m) if trains else 1



def gib(nbytes: float) -> float:
    return nbytes / 2 ** 30
