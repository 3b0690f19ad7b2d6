"""The side-by-side model: a plain chain of stages, each `layers` x (Linear(H, H) + GELU).

Both runtimes get bit-identical stages (same seed, same data), so their step times compare the
runtimes and nothing else. `ChainCompute` is the `compute` object our Executor needs for a chain:
a language-kind module alone on p pipeline stages, built directly as a Plan (no preset, no megatron).
"""

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F

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


def chain_plan(cfg: ChainConfig) -> Plan:
    """A language-kind module alone on `stages` ranks, one per pipeline stage."""
    lang = ModulePlan(LANG, "language", 0, cfg.stages, 1, 1, 1, cfg.stages)
    return Plan(cfg.stages, ModuleLayout.NON_COLOCATED, {LANG: lang}, (), cfg.micro_batch * cfg.microbatches,
                cfg.micro_batch, None)


def build_stage(cfg: ChainConfig, stage: int) -> torch.nn.Sequential:
    """Stage `stage` of the chain; its weights depend only on (seed, stage)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + stage)
    layers: List[torch.nn.Module] = []
    for _ in range(cfg.layers):
        lin = _linear(cfg)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(cfg.hidden, cfg.hidden, generator=gen) / cfg.hidden ** 0.5)
            lin.bias.zero_()
        layers += [lin, torch.nn.GELU()]
    return torch.nn.Sequential(*layers).to(cfg.device)


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
        h = self._rows(x, mb) if self.stage == 0 else inputs[LANG]
        out = self.module(h)
        if self.stage < self.cfg.stages - 1:
            return out
        loss = chain_loss(out, self._rows(target, mb)) / self.cfg.microbatches
        st.loss_sum += float(loss.detach())
        return loss

    def p2p_shape(self, module: str, step: int, mb: int):
        """Activations and their gradients are always (micro_batch, hidden): no shape header needed."""
        return (self.cfg.micro_batch, self.hidden)

    def reduce_grads(self, module: str) -> None:
        """dp = 1: nothing to reduce."""
