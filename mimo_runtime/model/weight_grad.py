"""Backward split into input gradients (B) and weight gradients (W), for zero-bubble schedules.

megatron 0.16.1's linears compute the weight gradient inside their own backward
(`LinearWithGradAccumulationAndAsyncCommunication`), so a schedule cannot move it into a bubble.
`split_weight_gradients(model, queue)` gives every column- and row-parallel linear of `model` (the
transformer layers' qkv/proj/fc1/fc2, the output layer, the projectors; plain torch Linears too: the
benchmark chain, user encoders) a matmul whose backward computes only the input gradient (all-reduced over TP exactly where megatron's is) and hands
(input, output gradient) to `queue` under the key being recorded (the B action's microbatch). The
W action then computes grad_weight = grad_out^T @ input (and the bias's sum, for a bias inside the
matmul) and accumulates it into `.grad`, the same products megatron's backward forms.

What stays in B: embeddings, norms, convolution stems, and biases added outside the matmul
(`skip_bias_add`, the row-parallel linear's bias after its all-reduce): small next to the linears'
weight gradients. Frozen weights keep megatron's frozen path, and so do linears running under
autocast (`precision: bf16`, train/precision.py), whose matmul sees a cast copy of the weight.
On the portable backend only: transformer-engine's linears (GPU) keep their own backward. A model
never given to `split_weight_gradients` runs megatron's code path unchanged.
"""

import contextlib
from typing import Dict, Hashable, List, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

from mimo_runtime.model.sequence_parallel import PortableColumnParallelLinear, gather_from_sequence_parallel

Entry = Tuple[torch.nn.Parameter, Optional[torch.nn.Parameter], torch.Tensor, torch.Tensor]


class WeightGradQueue:
    """Deferred weight gradients by key; `recording(key)` names the B whose backward fills it."""

    def __init__(self):
        self.pending: Dict[Hashable, List[Entry]] = {}
        self.key: Optional[Hashable] = None

    @contextlib.contextmanager
    def recording(self, key: Hashable):
        self.key = key
        try:
            yield
        finally:
            self.key = None

    def defer(self, weight, bias, total_input: torch.Tensor, grad_output: torch.Tensor) -> None:
        if self.key is None:
            raise RuntimeError("a split linear ran its backward outside a recorded B action "
                               "(WeightGradQueue.recording)")
        self.pending.setdefault(self.key, []).append((weight, bias, total_input, grad_output))

    def compute(self, key: Hashable) -> int:
        """Accumulate the weight gradients B `key` deferred (W); returns how many linears it had."""
        entries = self.pending.pop(key, [])
        for weight, bias, x, g in entries:
            g2, x2 = g.reshape(-1, g.size(-1)), x.reshape(-1, x.size(-1))
            _accumulate(weight, g2.t().matmul(x2))
            if bias is not None:
                _accumulate(bias, g2.sum(dim=0))
        return len(entries)

    def flush(self, keep=lambda key: False) -> None:
        """Compute every pending key that `keep` does not hold back (before gradients are reduced)."""
        for key in [k for k in self.pending if not keep(k)]:
            self.compute(key)


def _accumulate(param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad
    else:
        param.grad += grad


class _InputGradOnly(torch.autograd.Function):
    """input @ weight^T (+ bias) whose backward returns only the input's gradient and defers the rest."""

    @staticmethod
    def forward(ctx, input, weight, bias, allreduce_dgrad, tp_group, queue):
        ctx.save_for_backward(input)
        # the parameters themselves, not saved tensors: saved-tensor hooks (train/memory.py) may unpack
        # a saved tensor as another object, and W must accumulate into the parameter's own .grad
        ctx.weight, ctx.bias, ctx.allreduce_dgrad, ctx.tp_group, ctx.queue = weight, bias, allreduce_dgrad, tp_group, queue
        out = torch.matmul(input, weight.t())
        return out + bias if bias is not None else out

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        weight = ctx.weight
        grad_input = grad_output.matmul(weight)
        if ctx.allreduce_dgrad:
            dist.all_reduce(grad_input, group=ctx.tp_group)
        ctx.queue.defer(weight, ctx.bias, input.detach(), grad_output.detach())
        return grad_input, None, None, None, None, None


def _split_forward_impl(module, queue: WeightGradQueue):
    """`module._forward_impl` with the weight gradient deferred (trainable weights only)."""
    original = module._forward_impl

    def forward_impl(input, weight, bias=None, gradient_accumulation_fusion=False, allreduce_dgrad=False,
                     sequence_parallel=False, grad_output_buffer=None, wgrad_deferral_limit=None, tp_group=None):
        if not weight.requires_grad or grad_output_buffer is not None or not torch.is_grad_enabled() or \
                torch.is_autocast_enabled(input.device.type):  # precision: bf16 casts the weight: not split
            return original(input, weight, bias=bias, gradient_accumulation_fusion=gradient_accumulation_fusion,
                            allreduce_dgrad=allreduce_dgrad, sequence_parallel=sequence_parallel,
                            grad_output_buffer=grad_output_buffer, wgrad_deferral_limit=wgrad_deferral_limit,
                            tp_group=tp_group)
        if sequence_parallel:  # what PortableColumnParallelLinear does before megatron's matmul
            input = gather_from_sequence_parallel(input, module.tp_group)
        return _InputGradOnly.apply(input, weight, bias, allreduce_dgrad, tp_group, queue)

    return forward_impl


def _split_torch_linear(module: torch.nn.Linear, queue: WeightGradQueue):
    def forward(input):
        if not module.weight.requires_grad or not torch.is_grad_enabled():
            return torch.nn.functional.linear(input, module.weight, module.bias)
        return _InputGradOnly.apply(input, module.weight, module.bias, False, None, queue)

    return forward


def split_weight_gradients(model: torch.nn.Module, queue: WeightGradQueue) -> int:
    """Give every column/row-parallel linear (and plain torch Linear) of `model` the split backward;
    returns how many."""
    count = 0
    for m in model.modules():
        if type(m) is torch.nn.Linear:
            m.forward = _split_torch_linear(m, queue)
            count += 1
        elif isinstance(m, (ColumnParallelLinear, RowParallelLinear)):
            if m.sequence_parallel and isinstance(m, ColumnParallelLinear) and \
                    not isinstance(m, PortableColumnParallelLinear):
                raise ValueError("zero_bubble's weight-gradient split needs the portable sequence-parallel "
                                 "linears (model/sequence_parallel.py)")
            m._forward_impl = _split_forward_impl(m, queue)
            count += 1
    return count
