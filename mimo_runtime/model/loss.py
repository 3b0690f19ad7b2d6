"""Cross-entropy over vocab-parallel logits, with an explicit tensor-parallel group.

megatron's vocab_parallel_cross_entropy reads parallel_state's TP group in 0.16.1; this is the same
algorithm (max, sum-exp and target-logit all-reduces over the group) with the group passed in.
"""

from typing import Optional

import torch
import torch.distributed as dist


def _all_reduce(x: torch.Tensor, op, group) -> torch.Tensor:
    if group is not None and group.size() > 1:
        dist.all_reduce(x, op=op, group=group)
    return x


class _VocabParallelCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, tp_group) -> torch.Tensor:
        logits = logits.float()
        vocab_local = logits.size(-1)
        rank = tp_group.rank() if tp_group is not None else 0
        start = rank * vocab_local
        logits_max = _all_reduce(logits.max(dim=-1).values, dist.ReduceOp.MAX, tp_group)
        shifted = logits - logits_max.unsqueeze(-1)
        local_target = target - start
        outside = (local_target < 0) | (local_target >= vocab_local)
        local_target = local_target.masked_fill(outside, 0)
        predicted = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0)
        predicted = _all_reduce(predicted, dist.ReduceOp.SUM, tp_group)
        exp = shifted.exp()
        sum_exp = _all_reduce(exp.sum(dim=-1), dist.ReduceOp.SUM, tp_group)
        loss = sum_exp.log() - predicted
        ctx.save_for_backward(exp.div_(sum_exp.unsqueeze(-1)), local_target, outside)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        # d loss / d logits = softmax - onehot(target); each rank owns its vocab slice, so no
        # communication here (the output layer's backward reduces its input grad over TP).
        softmax, local_target, outside = ctx.saved_tensors
        grad = softmax.clone()  # keep the saved softmax intact if backward runs twice
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -(~outside).to(grad.dtype).unsqueeze(-1))
        return grad * grad_loss.unsqueeze(-1), None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, tp_group) -> torch.Tensor:
    """Per-token cross-entropy (same shape as target) of logits split over the vocab by `tp_group`
    (rank r holds vocab ids [r*V/tp, (r+1)*V/tp)); tp_group None or size 1: ordinary logits."""
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"labels shape {tuple(target.shape)} does not match logits {tuple(logits.shape)[:-1]}")
    return _VocabParallelCrossEntropy.apply(logits, target.long(), tp_group)


def masked_token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor,
                          tp_group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    """SUM over tokens with loss_mask != 0 of their cross-entropy (a scalar); the caller divides
    by the global number of masked tokens so every topology gets the same loss and gradients."""
    if loss_mask.shape != labels.shape:
        raise ValueError(f"loss_mask shape {tuple(loss_mask.shape)} != labels shape {tuple(labels.shape)}")
    per_token = vocab_parallel_cross_entropy(logits, labels, tp_group)
    return (per_token * loss_mask.to(per_token.dtype)).sum()
