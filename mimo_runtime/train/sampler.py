"""Deterministic sampler over global sample indices (DESIGN "Sampling").

Every rank derives the same assignment from the plan alone: step k takes positions
[k*G, (k+1)*G) of a per-epoch permutation; microbatch j is the j-th run of G_mb = micro_batch x
language dp samples; DP replica d of a module with DP size D owns the d-th 1/D of each microbatch.
The union over a step is the same whatever the topology, so losses compare exactly.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Optional

import torch

from mimo_runtime.plan import ModulePlan, Plan


@dataclass(frozen=True)
class Sampler:
    dataset_len: int
    global_batch: int
    global_mb: int  # samples in one microbatch across the language DP replicas
    seed: int
    shuffle: bool = True
    order: Optional[Callable[[List[int]], List[int]]] = None  # data.balance: reorders a step (data/balance.py)

    @classmethod
    def for_plan(cls, plan: Plan, dataset_len: int, seed: int, shuffle: bool = True, order=None) -> "Sampler":
        return cls(dataset_len, plan.global_batch, plan.micro_batch * plan.language.dp, seed, shuffle, order)

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // self.global_mb

    def step_samples(self, step: int) -> List[int]:
        out = []
        for pos in range(step * self.global_batch, (step + 1) * self.global_batch):
            epoch, i = divmod(pos, self.dataset_len)
            out.append(self._order(epoch)[i])
        return self.order(out) if self.order is not None else out

    def microbatch(self, step: int, mb: int) -> List[int]:
        return self.step_samples(step)[mb * self.global_mb:(mb + 1) * self.global_mb]

    def replica(self, step: int, mb: int, module: ModulePlan, dp_rank: int) -> List[int]:
        per = self.global_mb // module.dp
        return self.microbatch(step, mb)[dp_rank * per:(dp_rank + 1) * per]

    def _order(self, epoch: int) -> List[int]:
        return _permutation(self.dataset_len, self.seed, epoch, self.shuffle)


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    if not shuffle:
        return list(range(n))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()
