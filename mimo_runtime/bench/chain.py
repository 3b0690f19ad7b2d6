"""The side-by-side model: a plain chain of stages, each `layers` x (Linear(H, H) + GELU).

Both runtimes get bit-identical stages (same seed, same data), so their step times compare the
runtimes and nothing else. `ChainCompute` is the `compute` object our Executor needs for a chain:
a language-kind module alone on p pipeline stages, built directly as a Plan (no preset, no megatron).
With `vpp` V > 1 each rank holds V chunks of `layers / V` layers (chunk c of rank r is virtual stage
c * stages + r, megatron's interleaving), so the work per rank is the same as at V = 1; with the
`zero_bubble` schedule the chunks' linears split their backward into B and W (model/weight_grad.py).
"""

import contextlib
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F

from mimo_runtime.model.weight_grad import WeightGradQueue, split_weight_gradients
from mimo_runtime.plan import ModuleLayout, ModulePlan, Plan

LANG = "language"


@dataclass(frozen=True)
class ChainConfig:
    hidden: int = 512
    layers: int = 4  # per stage
    stages: int = 2
    microbatches: int = 8
    micro_batch: int = 4  # rows per microbatch
    seed: int = 0
    device: str = "cpu"  # "cuda:<rank>" in benchmarks/gpu_pipeline.py
    linear: str = "torch"  # or "te": transformer-engine's Linear (GPU only)
    vpp: int = 1  # chunks per rank (virtual stages): interleaved_1f1b and zero_bubble compare at 2
    schedule: str = "1f1b"  # 1f1b | interleaved_1f1b | zero_bubble (ours) and torch's class of that kind


def chain_plan(cfg: ChainConfig) -> Plan:
    """A language-kind module alone on `stages` ranks, one per pipeline stage."""
    lang = ModulePlan(LANG, "language", 0, cfg.stages, 1, 1, 1, cfg.stages, vpp=cfg.vpp)
    return Plan(cfg.stages, ModuleLayout.NON_COLOCATED, {LANG: lang}, (), cfg.micro_batch * cfg.microbatches,
                cfg.micro_batch, None)


def build_stage(cfg: ChainConfig, stage: int) -> torch.nn.Module:
    """Stage `stage` of the chain; its weights depend only on (seed, stage). With vpp > 1 a ModuleList
    of its chunks, each seeded by its virtual stage."""
    if cfg.vpp == 1:
        return _block(cfg, stage, cfg.layers)
    if cfg.layers % cfg.vpp:
        raise ValueError(f"vpp={cfg.vpp} must divide layers={cfg.layers}")
    return torch.nn.ModuleList(_block(cfg, c * cfg.stages + stage, cfg.layers // cfg.vpp) for c in range(cfg.vpp))


def _block(cfg: ChainConfig, virtual_stage: int, layers: int) -> torch.nn.Sequential:
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + virtual_stage)
    layers_: List[torch.nn.Module] = []
    for _ in range(layers):
        lin = _linear(cfg)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(cfg.hidden, cfg.hidden, generator=gen) / cfg.hidden ** 0.5)
            lin.bias.zero_()
        layers_ += [lin, torch.nn.GELU()]
    return torch.nn.Sequential(*layers_).to(cfg.device)


def _linear(cfg: ChainConfig) -> torch.nn.Module:
    if cfg.linear == "te":
        import transformer_engine.pytorch as te  # optional GPU extra, imported only when asked for

        return te.Linear(cfg.hidden, cfg.hidden, bias=True, device=cfg.device)
    return torch.nn.Linear(cfg.hidden, cfg.hidden)


def batch(cfg: ChainConfig, step: int):
    """(inputs, targets) of one step: microbatches x micro_batch rows, the same on every rank."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    rows = cfg.microbatches * cfg.micro_batch
    x, y = torch.randn(rows, cfg.hidden, generator=gen), torch.randn(rows, cfg.hidden, generator=gen)
    return x.to(cfg.device), y.to(cfg.device)


def chain_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, target)


class ChainCompute:
    """What one chain rank computes per action (the executor owns order, comm and autograd).

    The loss per microbatch is divided by m, as torch.distributed.pipelining's scale_grads does,
    so both runtimes produce the same gradients.
    """

    dtype = torch.float32

    def __init__(self, cfg: ChainConfig, stage: int, module: torch.nn.Module):
        self.cfg, self.stage, self.module = cfg, stage, module
        self.device = torch.device(cfg.device)
        self.hidden = cfg.hidden
        self._step, self._data = -1, None
        self.chunks = list(module) if cfg.vpp > 1 else [module]
        self.queue = None
        if cfg.schedule == "zero_bubble":
            self.queue = WeightGradQueue()
            split_weight_gradients(module, self.queue)

    def _batch(self, step: int):
        if step != self._step:
            self._step, self._data = step, batch(self.cfg, step)
        return self._data

    def _rows(self, t: torch.Tensor, mb: int) -> torch.Tensor:
        n = self.cfg.micro_batch
        return t[mb * n:(mb + 1) * n]

    def forward(self, module: str, step: int, mb: int, inputs: Dict[str, torch.Tensor], st,
                chunk: int = 0) -> torch.Tensor:
        x, target = self._batch(step)
        virtual = chunk * self.cfg.stages + self.stage
        h = self._rows(x, mb) if virtual == 0 else inputs[LANG]
        out = self.chunks[chunk](h)
        if virtual < self.cfg.stages * self.cfg.vpp - 1:
            return out
        loss = chain_loss(out, self._rows(target, mb)) / self.cfg.microbatches
        st.loss_sum += float(loss.detach())
        return loss

    def p2p_shape(self, module: str, step: int, mb: int):
        """Activations and their gradients are always (micro_batch, hidden): no shape header needed."""
        return (self.cfg.micro_batch, self.hidden)

    def deferring_weight_grads(self, module: str, chunk: int, step: int, mb: int):
        return contextlib.nullcontext() if self.queue is None else self.queue.recording((chunk, step, mb))

    def weight_grads(self, module: str, chunk: int, step: int, mb: int) -> None:
        self.queue.compute((chunk, step, mb))

    def reduce_grads(self, module: str) -> None:
        """dp = 1: nothing to reduce (but every deferred weight gradient is computed)."""
        if self.queue is not None:
            self.queue.flush()
