"""A quick profile for the auto-planner's cost model: this machine's sustained matmul rate, one thread."""

import time

from mimo_runtime.autoplan import Hardware


def measure_flops(hidden: int = 512, rows: int = 256, seconds: float = 0.3) -> float:
    """FLOP/s of (rows x hidden) @ (hidden x hidden) forward matmuls, the bulk of a transformer layer."""
    import torch

    torch.set_num_threads(1)
    a, w = torch.randn(rows, hidden), torch.randn(hidden, hidden)
    a @ w  # first call allocates
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ w
        done += 1
    return 2.0 * rows * hidden * hidden * done / (time.perf_counter() - start)


def calibrated(hw: Hardware) -> Hardware:
    from dataclasses import replace

    return replace(hw, flops_per_s=measure_flops())
