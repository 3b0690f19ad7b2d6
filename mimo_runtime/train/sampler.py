"""Deterministic sampler over global sample indices (DESIGN "Sampling").

Every rank derives the same assignment from the plan alone: step k takes positions
[k*G, (k+1)*G) of a per-epoch permutation; microbatch j is the j-th run of G_mb = micro_batch x
language dp samples; DP replica d of a module with DP size D owns the d-th 1/D of each microbatch.
The union over a step is the same whatever the topology, so losses compare exactly.

The permutation is never materialized: position i of epoch e maps to a sample through a keyed
bijection of [0, n) (a Feistel network over the next power of four, walking cycles back into
range), so a rank computes only the indices it reads, in O(1) memory whatever the dataset size.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional

from mimo_runtime.plan import ModulePlan, Plan

ROUNDS = 4  # Luby-Rackoff: four rounds of a keyed function make a well-mixed permutation
MASK64 = (1 << 64) - 1


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
        ids = self._span(step * self.global_batch, self.global_batch)
        return self.order(ids) if self.order is not None else ids

    def microbatch(self, step: int, mb: int) -> List[int]:
        if self.order is not None:  # balanced: the reordered step decides (per-sample metadata only)
            return self.step_samples(step)[mb * self.global_mb:(mb + 1) * self.global_mb]
        return self._span(step * self.global_batch + mb * self.global_mb, self.global_mb)

    def replica(self, step: int, mb: int, module: ModulePlan, dp_rank: int) -> List[int]:
        per = self.global_mb // module.dp
        if self.order is not None:
            return self.microbatch(step, mb)[dp_rank * per:(dp_rank + 1) * per]
        return self._span(step * self.global_batch + mb * self.global_mb + dp_rank * per, per)

    def _span(self, start: int, count: int) -> List[int]:
        return [self.sample_at(pos) for pos in range(start, start + count)]

    def sample_at(self, pos: int) -> int:
        """The sample at position `pos` of the run (epoch after epoch)."""
        epoch, i = divmod(pos, self.dataset_len)
        return permuted(i, self.dataset_len, self.seed * 1_000_003 + epoch) if self.shuffle else i


def permuted(i: int, n: int, key: int) -> int:
    """Image of i under a bijection of [0, n) chosen by `key`."""
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    while True:  # cycle walking: a bijection of [0, 4**half) restricted to [0, n) stays one
        i = _feistel(i, half, key)
        if i < n:
            return i


def _feistel(x: int, half: int, key: int) -> int:
    low = (1 << half) - 1
    left, right = x >> half, x & low
    for r in range(ROUNDS):
        left, right = right, left ^ (_mix(key, r, right) & low)
    return (left << half) | right


def _mix(key: int, r: int, x: int) -> int:
    """splitmix64's finalizer over (key, round, x): a cheap keyed function with good avalanche."""
    z = (key * 0x9E3779B97F4A7C15 + r * 0xBF58476D1CE4E5B9 + x + 1) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)
