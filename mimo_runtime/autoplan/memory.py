"""Memory model: parameters per family, and per rank the bytes of weights, gradients, optimizer
state and activations under a plan. Pure arithmetic over a preset's dimensions (no torch).

Parameters are counted as the megatron modules this runtime builds hold them, per family:
- language (LanguageDims): qkv with grouped-query heads, output projection, a GELU MLP (fc1, fc2)
  or a SwiGLU one (fc1 = [gate; up]), LayerNorm (weight + bias) or RMSNorm (weight), biases on
  every linear (megatron's default) or none (Llama) or on qkv only (Qwen2); word embeddings, the
  final norm and an untied output layer. A tied output layer on a later stage is megatron's copy
  of the embedding (counted on that stage, not in the model's total).
- encoders (EncoderDims): pre-norm transformer layers with biases; the stem of their family (tiny:
  linear patches or Whisper-like conv stem; clip: bias-free patch conv, class token, pre-LayerNorm;
  siglip: patch conv with bias; whisper: two convs), position embeddings, a final LayerNorm, and
  the LLaVA `mlp2x_gelu` projector into the language width.
Every family's TP-split matrices and column-parallel biases divide by tp; norms and row-parallel
biases stay whole on every TP rank.

Activations (values kept for backward per token per layer, megatron's selective accounting with
flash/SDPA attention, so no s x s scores, and dropout 0 so no masks): attention 3 + 2 kv/heads
(qkv input, q, k, v, projection input), MLP 1 + 2 f/h (GELU) or 1 + 4 f/h (SwiGLU: gate and up,
silu(gate), their product), norms 2. With sequence parallelism all of it divides by tp, without
it the norm, qkv and fc1 inputs (4) stay whole; context parallelism divides the tokens. `full`
recompute keeps one value per token per layer plus one layer's working set. The last language
stage also keeps its vocabulary-parallel logits.
"""

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from mimo_runtime.plan import ModuleLayout, Plan
from mimo_runtime.topology import EncoderDims, LanguageDims, PresetDims

LANG = "language"
Shape = Tuple[int, int, int, int]  # (tp, cp, dp, pp)


@dataclass(frozen=True)
class Count:
    """Parameters split over TP ranks, and those every TP rank holds whole."""

    split: int = 0
    whole: int = 0

    @property
    def total(self) -> int:
        return self.split + self.whole

    def per_rank(self, tp: int) -> float:
        return self.split / tp + self.whole

    def __add__(self, other: "Count") -> "Count":
        return Count(self.split + other.split, self.whole + other.whole)


def _norm(width: int, kind: str) -> Count:
    return Count(0, width if kind == "rmsnorm" else 2 * width)


def language_layer(d: LanguageDims) -> Count:
    h, f, kv = d.hidden, d.ffn_hidden, d.kv_heads * (d.hidden // d.heads)
    qkv_out = h + 2 * kv
    fc1_out = 2 * f if d.gated else f
    split = h * qkv_out + h * h + h * fc1_out + f * h
    whole = 0
    if d.linear_bias:
        split += qkv_out + fc1_out  # column-parallel biases split with their outputs
        whole += 2 * h  # row-parallel biases (projection, fc2) are whole on every TP rank
    elif d.qkv_bias:
        split += qkv_out
    return Count(split, whole) + _norm(h, d.norm) + _norm(h, d.norm)


def encoder_layer(e: EncoderDims) -> Count:
    h, f = e.hidden, e.ffn
    return Count(4 * h * h + 2 * h * f + 3 * h + f, 2 * h) + _norm(h, "layernorm") + _norm(h, "layernorm")


def language_first(d: LanguageDims) -> Count:
    """The word embeddings (vocabulary-parallel)."""
    return Count(d.vocab_size * d.hidden)


def language_last(d: LanguageDims, pp: int) -> Count:
    """Final norm and output layer: its own weight when untied, megatron's embedding copy when
    tied and the last stage is not the first."""
    out = Count(d.vocab_size * d.hidden) if (not d.tied or pp > 1) else Count()
    return _norm(d.hidden, d.norm) + out


def encoder_stem(e: EncoderDims) -> Count:
    """The first stage's input embedding and positions."""
    h, c = e.hidden, e.in_channels
    positions = e.num_positions * h
    if e.modality == "audio":  # conv1 (k=3) from mel bins, conv2 (k=3), each with bias
        return Count(0, c * h * 3 + h + h * h * 3 + h + positions)
    patch = c * e.patch * e.patch * h
    if e.family == "clip":  # no patch bias; class token; pre-LayerNorm
        return Count(0, patch + h + positions) + _norm(h, "layernorm")
    return Count(0, patch + h + positions)


def encoder_last(e: EncoderDims, language_hidden: int) -> Count:
    """Final LayerNorm and the mlp2x_gelu projector (fc1 column-, fc2 row-parallel)."""
    lh = language_hidden
    return _norm(e.hidden, "layernorm") + Count(e.hidden * lh + lh + lh * lh, lh)


def module_parameters(preset: PresetDims, name: str) -> int:
    """Parameters of module `name` in the colocated model (the HF total for real presets, less
    what this runtime never builds, e.g. SigLIP's pooling head)."""
    if name == LANG:
        d = preset.language
        return d.layers * language_layer(d).total + language_first(d).total + language_last(d, 1).total
    e = preset.encoders[name]
    return e.layers * encoder_layer(e).total + encoder_stem(e).total + encoder_last(e, preset.language.hidden).total


def stage_parameters(preset: PresetDims, name: str, tp: int, pp: int, stage: int) -> Tuple[float, float]:
    """(all, projection) parameters on one rank of a stage; `projection` is the part a frozen
    encoder still trains."""
    first, last = stage == 0, stage == pp - 1
    if name == LANG:
        d = preset.language
        count = Count(d.layers // pp * language_layer(d).split, d.layers // pp * language_layer(d).whole)
        count = count + (language_first(d) if first else Count()) + (language_last(d, pp) if last else Count())
        return count.per_rank(tp), 0.0
    e = preset.encoders[name]
    proj = Count(e.hidden * preset.language.hidden + preset.language.hidden + preset.language.hidden ** 2,
                 preset.language.hidden) if last else Count()
    count = Count(e.layers // pp * encoder_layer(e).split, e.layers // pp * encoder_layer(e).whole)
    count = count + (encoder_stem(e) if first else Count()) + (encoder_last(e, preset.language.hidden)
                                                                if last else Count())
    return count.per_rank(tp), proj.per_rank(tp)


def layer_activation_values(preset: PresetDims, name: str) -> Tuple[float, float]:
    """(values split over TP ranks, values whole without sequence parallelism) per token per layer."""
    if name == LANG:
        d = preset.language
        h, f, kv_share = d.hidden, d.ffn_hidden, d.kv_heads / d.heads
        mlp = (1 + 4 * f / h) if d.gated else (1 + 2 * f / h)
    else:
        e = preset.encoders[name]
        h, f, kv_share = e.hidden, e.ffn, 1.0
        mlp = 1 + 2 * f / h
    total = (3 + 2 * kv_share) + mlp + 2
    return (total - 4) * h, 4 * h


def tokens_per_sample(preset: PresetDims, name: str) -> int:
    if name == LANG:
        return preset.language.seq_length
    e = preset.encoders[name]
    return e.tokens_per_item * e.max_items


@dataclass(frozen=True)
class RankMemory:
    """Bytes on one rank."""

    params: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations

    def __add__(self, o: "RankMemory") -> "RankMemory":
        return RankMemory(self.params + o.params, self.grads + o.grads, self.optimizer + o.optimizer,
                          self.activations + o.activations)


@dataclass(frozen=True)
class Precision:
    weight: int = 4  # bytes per parameter value (fp32: the CPU runtime's dtype)
    grad: int = 4
    optimizer: int = 8  # Adam's two fp32 moments
    activation: int = 4


def stage_memory(preset: PresetDims, name: str, shape: Shape, stage: int, samples: int, inflight: int,
                 trains: str = "all", sequence_parallel: bool = False, recompute: str = "none",
                 precision: Precision = Precision()) -> RankMemory:
    """One rank of pipeline stage `stage` of module `name` with `shape`, `samples` per microbatch
    per replica, `inflight` microbatches alive at its peak; trains: all | projection | none."""
    tp, cp, _, pp = shape
    params, proj = stage_parameters(preset, name, tp, pp, stage)
    trained = {"all": params, "projection": proj, "none": 0.0}[trains]
    tokens = samples * tokens_per_sample(preset, name) / cp
    split, whole = layer_activation_values(preset, name)
    per_layer = tokens * (split / tp + (whole / tp if sequence_parallel else whole))
    layers = (preset.language.layers if name == LANG else preset.encoders[name].layers) // pp
    hidden = preset.language.hidden if name == LANG else preset.encoders[name].hidden
    if trains == "none":
        values = 0.0
    elif trains == "projection":
        values = (tokens * hidden) if stage == pp - 1 else 0.0  # the projector's input
    elif recompute == "full":
        values = layers * tokens * hidden + per_layer
    else:
        values = layers * per_layer
    if name == LANG and stage == pp - 1 and trains != "none":
        values += tokens * preset.language.vocab_size / tp  # vocabulary-parallel logits
    act = values * precision.activation * inflight
    return RankMemory(params * precision.weight, trained * precision.grad, trained * precision.optimizer, act)


def rank_memory(plan: Plan, preset: PresetDims, recompute: Optional[Mapping[str, str]] = None,
                precision: Precision = Precision()) -> Dict[int, RankMemory]:
    """Peak bytes per rank under `plan` training with 1F1B: {rank: RankMemory}, summed over the
    module stages the rank holds (every module on every rank when colocated). A stage keeps its
    warm-up plus one microbatch alive (at most the step's microbatches); a frozen encoder trains
    only its projection, so its earlier stages keep none. Under `train.schedule` interleaved_1f1b or
    zero_bubble the generated lists say how many chunk forwards are alive at once (each 1/vpp of a stage's)."""
    from mimo_runtime.schedule.graph import depth_to_sink, stage_graph

    recompute = recompute or {}
    m = plan.num_microbatches
    colocated = plan.layout is ModuleLayout.COLOCATED
    depth = {} if colocated else depth_to_sink(stage_graph(plan))
    chunked = _chunked_inflight(plan, m) if not colocated else {}
    lang_dp = plan.modules[LANG].dp
    out: Dict[int, RankMemory] = {}
    for name, mod in plan.modules.items():
        samples = plan.micro_batch * lang_dp // mod.dp
        for rank in range(mod.rank_offset, mod.rank_offset + mod.size):
            stage = mod.coords(rank).pp
            hops = (mod.pp - 1 - stage) if colocated else depth[(name, stage)]
            trains = "projection" if mod.frozen else "all"
            inflight = min(hops + 1, m) if (trains == "all" or stage == mod.pp - 1) else 1
            inflight = chunked.get((name, stage), inflight)
            mem = stage_memory(preset, name, (mod.tp, mod.cp, mod.dp, mod.pp), stage, samples, inflight, trains,
                               mod.sequence_parallel, recompute.get(name, "none"), precision)
            out[rank] = out.get(rank, RankMemory(0.0, 0.0, 0.0, 0.0)) + mem
    return out


def _chunked_inflight(plan: Plan, m: int) -> Dict[tuple, float]:
    """(module, stage) -> stage-microbatches of activations alive at the peak of the interleaved or
    zero-bubble lists ({} under 1f1b / gpipe, whose rule above holds)."""
    kind = plan.topology.train.schedule if plan.topology is not None else "1f1b"
    if kind not in ("interleaved_1f1b", "zero_bubble"):
        return {}
    from mimo_runtime.schedule import build_schedule, simulate

    schedule = build_schedule(plan, m, kind)
    sim = simulate(schedule)
    return {node: sim.peak_inflight[node] / schedule.graph.num_chunks(node)
            for node in schedule.nodes if schedule.trains[node]}
