"""Medians and spreads of repeated timings; every number the benchmarks report goes through here."""

import statistics
from typing import Dict, List, Sequence


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> Dict[str, float]:
    """Median, interquartile range and extremes (seconds unless said otherwise), rounded for JSON."""
    qs = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": round(median(xs), 6), "p25": round(qs[0], 6), "p75": round(qs[2], 6),
            "min": round(min(xs), 6), "max": round(max(xs), 6), "n": len(xs)}


def ratio_spread(num: Sequence[float], den: Sequence[float]) -> Dict[str, float]:
    """Per-repetition ratios of paired, interleaved runs: the median is robust to load that drifts."""
    return spread([a / b for a, b in zip(num, den)])


def step_spans(per_rank: List[List[tuple]]) -> List[float]:
    """Per repetition, from the earliest rank's start to the latest rank's end (one shared monotonic clock)."""
    return [max(t1 for _, t1 in reps) - min(t0 for t0, _ in reps) for reps in zip(*per_rank)]


def load_average() -> float:
    import os

    return round(os.getloadavg()[0], 2)
