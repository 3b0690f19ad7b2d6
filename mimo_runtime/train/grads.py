"""Gradient reduction and the global gradient norm, with explicit groups (no parallel_state).

DESIGN "Semantics": per-microbatch losses are already divided by the global token count, so
gradients are SUM-reduced over each module's dp_cp group. Tied input/output embeddings on
different pipeline stages are summed over the module's embedding group.

The buckets depend only on which parameters are trainable, never on which ones received a
gradient on this replica: a replica whose encoder saw no items this step (or whose tokens never
reached some parameter) would otherwise flatten other tensors than its peers, and the all-reduce
would add unrelated gradients or hang. A trainable parameter without a gradient contributes zeros.
"""

from typing import Iterable, List, Optional

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 16 * 1024 * 1024


def all_reduce_grads(params: Iterable[torch.nn.Parameter], group: Optional[dist.ProcessGroup]) -> None:
    """SUM-reduce `.grad` of the trainable `params` over `group`, in flat buckets (one message per
    bucket). Each bucket also sums one flag per parameter (whether this replica had a gradient), so
    a parameter that no replica reached keeps `.grad = None`, exactly as in a single process."""
    if group is None or dist.get_world_size(group) == 1:
        return
    trainable = [p for p in params if p.requires_grad]
    had = {id(p): p.grad is not None for p in trainable}
    reached = []  # per bucket, the summed flags: read on the host once, after every bucket was reduced
    buckets = _buckets([_grad_or_zeros(p) for p in trainable])
    for bucket in buckets:
        flags = torch.tensor([float(had[id(p)]) for p in bucket], dtype=bucket[0].grad.dtype,
                             device=bucket[0].grad.device)
        grads = [p.grad for p in bucket] + [flags]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=group)
        synced = _unflatten_dense_tensors(flat, grads)
        for p, g in zip(bucket, synced):
            p.grad.copy_(g)
        reached.append(synced[-1])
    if not buckets or all(had.values()):
        return  # every replica had every gradient: nothing to read back
    for bucket, flags in zip(buckets, torch.cat(reached).split([len(b) for b in buckets])):
        for p, hit in zip(bucket, flags.tolist()):
            if not hit:
                p.grad = None


def _grad_or_zeros(p: torch.nn.Parameter) -> torch.nn.Parameter:
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    return p


def _buckets(params: List[torch.nn.Parameter]) -> List[List[torch.nn.Parameter]]:
    buckets, current, size = [], [], 0
    for p in params:
        current.append(p)
        size += p.grad.numel() * p.grad.element_size()
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


def sum_of_squares(params: Iterable[torch.nn.Parameter], device: Optional[torch.device] = None) -> torch.Tensor:
    """In float64 on the gradients' device: one host read per step, after the world all-reduce."""
    total = torch.zeros((), dtype=torch.float64, device=device)
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
