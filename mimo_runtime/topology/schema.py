"""Topology file schema: frozen dataclasses, one per section.

Each field's default, allowed values and one-line doc live in its `spec(...)`; the parser
(`parse.py`) reads them, so adding a key to the file format is one line here plus any
cross-field rule in `validate.py`.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union


def spec(default: Any = None, doc: str = "", choices: Tuple = (), positive: bool = False,
         min_value: Optional[float] = None, factory: Optional[Callable[[], Any]] = None):
    """A schema field: default, docs and simple checks, read by the parser."""
    meta = {"doc": doc, "choices": choices, "positive": positive, "min_value": min_value}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


REQUIRED = object()  # marks a field the file must give

# Bounds apply to values the file gives. A few defaults lie outside them on purpose (`ranks: 0`,
# `dp: 0`, `rank_offset: -1` mean "not given"); `validate.finalize` replaces them with derived values.


@dataclass(frozen=True)
class Parallel:
    tp: int = spec(1, "tensor-parallel size", positive=True)
    cp: int = spec(1, "context-parallel size (language model only)", positive=True)
    dp: int = spec(0, "data-parallel size; default: ranks / (tp * cp * pp), or 1 without ranks", positive=True)
    pp: int = spec(1, "pipeline-parallel size", positive=True)
    vpp: int = spec(1, "virtual pipeline stages per rank (interleaved schedules); vpp * pp must divide the layers",
                    positive=True)

    @property
    def size(self) -> int:
        return self.tp * self.cp * self.dp * self.pp


OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("1f1b", "gpipe", "interleaved_1f1b", "zero_bubble")


@dataclass(frozen=True)
class Optimizer:
    """`train.optimizer` (defaults) and `modules.NAME.optimizer` (overrides). A key left out (None)
    is inherited: module -> train.optimizer -> train.lr / train.weight_decay -> the default in the
    doc; `mimo_runtime.topology.training` resolves every module's section before anything runs."""

    name: Optional[str] = spec(None, "adamw or sgd; default adamw", choices=OPTIMIZERS)
    lr: Optional[float] = spec(None, "peak learning rate; default train.lr", min_value=0.0)
    weight_decay: Optional[float] = spec(None, "weight decay (decoupled for adamw, L2 for sgd); default "
                                               "train.weight_decay", min_value=0.0)
    betas: Optional[Tuple[float, float]] = spec(None, "adamw betas; default [0.9, 0.999]")
    eps: Optional[float] = spec(None, "adamw epsilon; default 1.0e-8", positive=True)
    momentum: Optional[float] = spec(None, "sgd momentum; default 0.0", min_value=0.0)
    lr_schedule: Optional[str] = spec(None, "constant, warmup_cosine or warmup_linear; default constant",
                                      choices=LR_SCHEDULES)
    warmup_steps: Optional[int] = spec(None, "steps of linear warm-up from 0 to lr; default 0", min_value=0)
    decay_steps: Optional[int] = spec(None, "step at which the decay reaches min_lr; default train.steps "
                                               "(`mimo-run train --steps N` sets it)",
                                      positive=True)
    min_lr: Optional[float] = spec(None, "learning rate at the end of the decay; default 0.0", min_value=0.0)
    no_weight_decay: Optional[Tuple[str, ...]] = spec(
        None, "parameter-name globs that get no weight decay; default ['*bias', '*norm*']")


@dataclass(frozen=True)
class Pretrained:
    path: str = spec(REQUIRED, "file (format torch) or checkpoint directory (format checkpoint) to load")
    format: str = spec("torch", "torch: a state-dict file of full tensors; checkpoint: a checkpoint of this runtime",
                       choices=("torch", "checkpoint"))
    map: str = spec("", "optional name-mapping hook 'package.module:function', called with each stored name")
    strict: bool = spec(True, "every parameter of the module must be loaded (false: missing ones keep their init)")


@dataclass(frozen=True)
class Module:
    name: str = spec("", "the key under `modules:`")
    kind: str = spec(REQUIRED, "encoder or language", choices=("encoder", "language"))
    modality: str = spec("", "for encoders: the modality it embeds; must equal the module name (the default)")
    ranks: int = spec(0, "number of ranks; default: tp * cp * dp * pp", positive=True)
    rank_offset: int = spec(-1, "first rank; default: right after the previous module", min_value=0)
    parallel: Parallel = spec(factory=Parallel, doc="parallel sizes")
    frozen: bool = spec(False, "freeze the encoder's weights (its projection stays trainable)")
    resources: Mapping[str, float] = spec(factory=dict, doc="Ray resources per rank, e.g. {CPU: 1, enc: 1}")
    optimizer: Optimizer = spec(factory=Optimizer, doc="this module's overrides of train.optimizer")
    freeze: Tuple[str, ...] = spec((), "parameter-name globs to freeze (no gradients, no optimizer state)")
    precision: Optional[str] = spec(None, "fp32 or bf16 compute; default train.precision", choices=PRECISIONS)
    recompute: str = spec("none", "activation recompute: none, full (every layer) or selective (core attention)",
                          choices=("none", "full", "selective"))
    pretrained: Optional[Pretrained] = spec(None, "load this module's weights before training")
    hf: str = spec("", "an HF directory with this module alone (CLIPVisionModel/SiglipVisionModel for an encoder, "
                       "a *ForCausalLM for the language model)")
    sequence_parallel: bool = spec(False, "language model with tp > 1: megatron sequence parallelism (activations "
                                          "outside attention and MLP split along the sequence over the TP ranks)")


@dataclass(frozen=True)
class Train:
    global_batch: int = spec(8, "samples per optimizer step", positive=True)
    micro_batch: int = spec(2, "samples per microbatch per language data-parallel replica", positive=True)
    steps: int = spec(20, "optimizer steps", positive=True)
    lr: float = spec(3.0e-4, "learning rate of every module (default of optimizer.lr)", min_value=0.0)
    weight_decay: float = spec(0.0, "weight decay of every module (default of optimizer.weight_decay)", min_value=0.0)
    optimizer: Optimizer = spec(factory=Optimizer, doc="optimizer and lr schedule defaults for every module")
    precision: str = spec("fp32", "default compute precision of every module: fp32 or bf16", choices=PRECISIONS)
    grad_clip: float = spec(1.0, "global gradient-norm clip across all modules; 0 disables", min_value=0.0)
    schedule: str = spec("1f1b", "pipeline schedule: 1f1b, gpipe, interleaved_1f1b (needs a module with vpp > 1) "
                                 "or zero_bubble (backward split into input and weight gradients)",
                         choices=SCHEDULES)
    seed: int = spec(1234, "seed for initialization and data", min_value=0)
    timeout_s: float = spec(120.0, "seconds any rank waits on a collective or a peer", positive=True)
    packing: bool = spec(False, "pack each microbatch's samples into one THD sequence, without their padding")
    skip_nonfinite: bool = spec(False, "skip a step whose loss or gradient norm is not finite (counted) instead of stopping")
    device: str = spec("auto", "where every rank computes: auto (CUDA when available), cpu or cuda (one GPU per rank)",
                       choices=("auto", "cpu", "cuda"))
    grad_reducer: str = spec("auto", "gradient reduction and optimizer: auto (megatron on CUDA, else runtime), runtime "
                                     "(bucketed all-reduce + torch.optim) or megatron (DDP + distributed optimizer; "
                                     "needs CUDA)", choices=("auto", "runtime", "megatron"))


@dataclass(frozen=True)
class ModelFactory:
    """`model: {factory, args}`: the user's model instead of a preset (docs/python_api.md);
    `model: {hf: DIR}`: an HF model directory (docs/models.md)."""

    factory: str = spec("", "'package.module:function' called as function(args, ctx) -> MimoModelConfig")
    hf: str = spec("", "an HF model directory (LlavaForConditionalGeneration or *ForCausalLM) instead of factory")
    args: Mapping[str, Any] = spec(factory=dict, doc="passed to the function as its first argument (any YAML)")

    def __hash__(self) -> int:  # args is a dict: hash its text so topologies can key caches
        return hash((self.factory, self.hf, repr(sorted(self.args.items(), key=str))))


@dataclass(frozen=True)
class DataFactory:
    """`data: {factory, args, workers}`: the user's dataset instead of the preset's."""

    factory: str = spec(REQUIRED, "'package.module:function' called as function(args, ctx) -> a dataset of samples")
    args: Mapping[str, Any] = spec(factory=dict, doc="passed to the function as its first argument (any YAML)")
    workers: int = spec(0, "data-loading worker processes per rank; 0 loads in the rank itself", min_value=0)

    def __hash__(self) -> int:
        return hash((self.factory, repr(sorted(self.args.items(), key=str)), self.workers))


@dataclass(frozen=True)
class Topology:
    name: str = spec("", "a label for logs")
    model: Union[str, ModelFactory] = spec("tiny-vlm", "model preset name, or {factory, args} for your own model, or {hf: DIR}")
    data: Optional[DataFactory] = spec(None, "{factory, args, workers} for your own dataset, or {format: llava or "
                                             "energon, ...} or {blend: [...]} for data on disk (topology/data.py); "
                                             "default: the preset's")
    placement: str = spec("separate", "separate: modules on their own ranks; colocated: every module on all ranks",
                          choices=("separate", "colocated"))
    modules: Mapping[str, Module] = spec(REQUIRED, "the modules, by name")
    edges: Tuple[Tuple[str, str], ...] = spec((), "[[encoder, language], ...]; default: every encoder -> language")
    train: Train = spec(factory=Train, doc="batch sizes and optimizer")
    source: str = spec("<memory>", "the file this topology came from")

    @property
    def model_name(self) -> str:
        """The preset name, or the factory's import path: a label for logs and checkpoints."""
        return self.model if isinstance(self.model, str) else self.model.factory or self.model.hf

    @property
    def language(self) -> Module:
        return next(m for m in self.modules.values() if m.kind == "language")

    @property
    def encoders(self) -> Dict[str, Module]:
        return {n: m for n, m in self.modules.items() if m.kind == "encoder"}

    @property
    def world_size(self) -> int:
        return max(m.rank_offset + m.ranks for m in self.modules.values())
