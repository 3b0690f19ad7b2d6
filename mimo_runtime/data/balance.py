"""`data.balance`: order each global batch so microbatches and DP replicas get even work.

A sample's cost is a vector, one entry per kind of work: encoder rows (images x rows per image) and
language tokens. A step's samples are dealt to the finest (microbatch, data-parallel chunk) runs
(chunks: the largest DP size among the modules; every module's DP replica owns a run of consecutive
chunks, since DP sizes divide one another), greedily: the costliest sample first, into the run whose
heaviest normalized load grows least. The global batch is the
same set of samples, so the loss and gradients are the unbalanced run's up to summation order.

Pure Python, no torch: tested on large generated batches without processes.
"""

from functools import lru_cache
from typing import Callable, Dict, List, Sequence, Tuple

Cost = Tuple[float, ...]


def deal(costs: Sequence[Cost], bins: int) -> List[List[int]]:
    """Positions of `costs` in `bins` bins of equal size len(costs) / bins, loads evened greedily."""
    n = len(costs)
    if bins <= 0 or n % bins:
        raise ValueError(f"{n} samples do not split into {bins} equal bins")
    size = n // bins
    dims = len(costs[0]) if costs else 0
    totals = [sum(c[d] for c in costs) or 1.0 for d in range(dims)]
    norm = [tuple(c[d] / totals[d] for d in range(dims)) for c in costs]
    load = [[0.0] * dims for _ in range(bins)]
    out: List[List[int]] = [[] for _ in range(bins)]
    for i in sorted(range(n), key=lambda i: (-max(norm[i], default=0.0), -sum(norm[i]), i)):
        def grown(b: int) -> Tuple[float, float, int]:
            after = [load[b][d] + norm[i][d] for d in range(dims)]
            return max(after, default=0.0), sum(after), b

        b = min((b for b in range(bins) if len(out[b]) < size), key=grown)
        out[b].append(i)
        for d in range(dims):
            load[b][d] += norm[i][d]
    return out


def balanced(samples: Sequence[int], costs: Sequence[Cost], microbatches: int, chunks: int) -> List[int]:
    """The step's samples reordered: microbatch j is the j-th run of len/microbatches samples, and
    each microbatch is `chunks` runs of equal size. Every (microbatch, chunk) run is one bin of the
    deal, so each replica's share of each microbatch is even, and with it each microbatch's total
    and each coarser replica's share (a run of consecutive chunks)."""
    order: List[int] = []
    for run in deal(costs, microbatches * chunks):
        order += [samples[k] for k in sorted(run)]
    return order


def max_over_mean(loads: Sequence[float]) -> float:
    mean = sum(loads) / len(loads)
    return max(loads) / mean if mean else 1.0


def chunk_loads(order: Sequence[int], cost: Callable[[int], Cost], chunk: int) -> List[Cost]:
    """Summed cost vectors of consecutive runs of `chunk` samples of `order`."""
    out = []
    for k in range(0, len(order), chunk):
        parts = [cost(i) for i in order[k:k + chunk]]
        out.append(tuple(map(sum, zip(*parts))))
    return out


class BalancedOrder:
    """The sampler's `order` hook (train/sampler.py) for one plan and dataset: costs come from the
    dataset's per-sample counts, the same on every rank."""

    def __init__(self, cost: Callable[[int], Cost], microbatches: int, chunks: int):
        self.cost, self.microbatches, self.chunks = cost, microbatches, chunks
        self._order = lru_cache(maxsize=4)(self._compute)  # a step's order is asked for many times

    def __call__(self, samples: List[int]) -> List[int]:
        return list(self._order(tuple(samples)))

    def _compute(self, samples: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(balanced(samples, [self.cost(i) for i in samples], self.microbatches, self.chunks))


def load_report(order_before: Sequence[int], order_after: Sequence[int], cost: Callable[[int], Cost],
                chunks: Dict[str, Tuple[int, int]]) -> Dict[str, Dict[str, float]]:
    """max/mean load per module before and after: chunks {module: (samples per replica and
    microbatch, cost dimension)}."""
    out = {}
    for name, (chunk, dim) in chunks.items():
        out[name] = {when: max_over_mean([c[dim] for c in chunk_loads(order, cost, chunk)])
                     for when, order in (("before", order_before), ("after", order_after))}
    return out
