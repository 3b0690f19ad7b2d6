"""Gradient reduction and the global gradient norm, with explicit groups (no parallel_state).

DESIGN "Semantics": per-microbatch losses are already divided by the global token count, so
gradients are SUM-reduced over each module's dp_cp group. Tied input/output embeddings on
different pipeline stages are summed over the module's embedding group.
"""

from typing import Iterable, List, Optional

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 16 * 1024 * 1024


def all_reduce_grads(params: Iterable[torch.nn.Parameter], group: Optional[dist.ProcessGroup]) -> None:
    """SUM-reduce `.grad` of `params` over `group`, in flat buckets (one message per bucket)."""
    if group is None or dist.get_world_size(group) == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _buckets(grads):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat, group=group)
        for g, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            g.copy_(synced)


def _buckets(grads: List[torch.Tensor]) -> List[List[torch.Tensor]]:
    buckets, current, size = [], [], 0
    for g in grads:
        current.append(g)
        size += g.numel() * g.element_size()
        if size >= BUCKET_BYTES:
            buckets.append(current)
            current, size = [], 0
    if current:
        buckets.append(current)
    return buckets


def counts_toward_norm(p: torch.nn.Parameter, tp_rank: int, dp_cp_rank: int, duplicate: bool) -> bool:
    """Count each distinct gradient element once across the world: one DP/CP replica, TP-replicated
    parameters on TP rank 0 only, and a tied embedding copy only on the stage that owns it."""
    if duplicate or dp_cp_rank != 0:
        return False
    return bool(getattr(p, "tensor_model_parallel", False)) or tp_rank == 0


def sum_of_squares(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for p in params:
        if p.grad is not None:
            total += p.grad.detach().double().pow(2).sum()
    return total


def clip_(params: Iterable[torch.nn.Parameter], total_norm: float, max_norm: float) -> None:
    if max_norm <= 0 or total_norm <= max_norm:
        return
    coef = max_norm / (total_norm + 1e-6)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef)
