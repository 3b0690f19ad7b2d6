"""Data placement: each rank loads only what its stage uses (DESIGN "Data placement").

Encoder first stages load their modality's items for their samples; encoder last stages only the
per-sample item counts (to split rows for the bridge); language stages only token tensors.
"""

from typing import Dict, List

import torch

from mimo_runtime.plan import ModulePlan, Plan
from mimo_runtime.topology import PRESETS
from mimo_runtime.train.sampler import Sampler


class Feeder:
    def __init__(self, plan: Plan, dataset, sampler: Sampler, collate_tokens, collate_modality):
        self.plan, self.dataset, self.sampler = plan, dataset, sampler
        self.collate_tokens, self.collate_modality = collate_tokens, collate_modality
        preset = PRESETS[plan.topology.model]
        self.tokens_per_item = {n: d.tokens_per_item for n, d in preset.encoders.items()}
        self._step_tokens: Dict[int, int] = {}
        self._token_batches: Dict[tuple, Dict[str, torch.Tensor]] = {}  # this step's batches, by replica

    def samples(self, step: int, mb: int, module: ModulePlan, rank: int) -> List[int]:
        return self.sampler.replica(step, mb, module, module.coords(rank).dp)

    def modality_inputs(self, step: int, mb: int, name: str, rank: int) -> Dict:
        ids = self.samples(step, mb, self.plan.modules[name], rank)
        return self.collate_modality([self.dataset.modality(i, name) for i in ids])

    def rows_per_sample(self, step: int, mb: int, name: str, rank: int) -> List[int]:
        """Rows each of this encoder replica's samples contributes (items x tokens per item)."""
        ids = self.samples(step, mb, self.plan.modules[name], rank)
        return [self.dataset.num_items(i, name) * self.tokens_per_item[name] for i in ids]

    def tokens(self, step: int, mb: int, module: ModulePlan, rank: int) -> Dict[str, torch.Tensor]:
        """A language replica's token batch; the bridge, forward and backward of one microbatch share it."""
        key = (step, mb, module.name, module.coords(rank).dp)
        if key not in self._token_batches:
            if any(k[0] != step for k in self._token_batches):
                self._token_batches.clear()
            ids = self.samples(step, mb, module, rank)
            self._token_batches[key] = self.collate_tokens([self.dataset.tokens(i) for i in ids])
        return self._token_batches[key]

    def all_modality_inputs(self, step: int, mb: int, rank: int) -> Dict:
        """Colocated: every module on this rank, so every modality of this replica's samples."""
        return {n: self.modality_inputs(step, mb, n, rank) for n in self.plan.encoders}

    def loss_tokens(self, step: int) -> int:
        """Masked tokens in the whole global batch: the loss denominator (same on every topology)."""
        if step not in self._step_tokens:
            self._step_tokens = {step: int(sum(int(self.dataset.tokens(i)["loss_mask"].sum())
                                               for i in self.sampler.step_samples(step)))}
        return self._step_tokens[step]
