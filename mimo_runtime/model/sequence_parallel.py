"""megatron's sequence parallelism (`config.sequence_parallel`, tp > 1) on any device.

With SP, activations outside attention and the MLP are split along the sequence over the TP ranks:
a column-parallel linear all-gathers its input first, a row-parallel linear reduce-scatters its
output, and norms see only their slice. megatron's versions of those collectives allocate with
`torch.cuda.current_device()`, its torch LayerNorm wrapper refuses SP, and its layers fork the CUDA
RNG tracker around dropout; the pieces below are the same algorithms with the group passed in and
the tensors' own device. With transformer-engine on GPU (model/specs.py) megatron's own are used.

Parameters that every TP rank holds whole but feeds only with its slice (norm weights, the row
linear's bias) are tagged `sequence_parallel = True`, as megatron does: their gradients must be
summed over the TP group (train/mimo_compute.py).
"""

import contextlib
import copy

import megatron.core.tensor_parallel.random as tp_random
import torch
import torch.distributed as dist
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules


def _all_gather(x: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(group.size())]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _reduce_scatter(x: torch.Tensor, group) -> torch.Tensor:
    # gloo has no reduce-scatter: all-reduce, then keep this rank's slice
    x = x.contiguous().clone()
    dist.all_reduce(x, group=group)
    return x.chunk(group.size(), dim=0)[group.rank()].contiguous()


def _slice(x: torch.Tensor, group) -> torch.Tensor:
    return x.chunk(group.size(), dim=0)[group.rank()].contiguous()


class _Scatter(torch.autograd.Function):
    """Full sequence (replicated) -> this rank's slice; backward all-gathers the slices' grads."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _slice(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, ctx.group), None


class _Gather(torch.autograd.Function):
    """Slices -> full sequence; backward: each rank's grad of the full sequence, summed, sliced."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter(grad, ctx.group), None


class _ReduceScatter(torch.autograd.Function):
    """Partial sums of the full sequence -> this rank's slice of the sum; backward all-gathers."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, ctx.group), None


def scatter_to_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    """(S, ...) identical on every TP rank -> (S/tp, ...) this rank's contiguous slice."""
    if x.size(0) % group.size():
        raise ValueError(f"sequence parallelism: {x.size(0)} positions do not split over {group.size()} TP ranks")
    return _Scatter.apply(x, group)


def gather_from_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    return _Gather.apply(x, group)


def reduce_scatter_to_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    return _ReduceScatter.apply(x, group)


class PortableColumnParallelLinear(ColumnParallelLinear):
    """ColumnParallelLinear whose SP input all-gather runs on any device."""

    def _forward_impl(self, input, weight, *args, sequence_parallel: bool = False, **kwargs):
        if sequence_parallel:
            input = gather_from_sequence_parallel(input, self.tp_group)
        return super()._forward_impl(input, weight, *args, sequence_parallel=False, **kwargs)


class PortableRowParallelLinear(RowParallelLinear):
    """RowParallelLinear whose SP output reduce-scatter runs on any device."""

    def forward(self, input_):
        if not self.sequence_parallel:
            return super().forward(input_)
        out = self._forward_impl(input=input_, weight=self.weight, bias=None,
                                 gradient_accumulation_fusion=self.gradient_accumulation_fusion,
                                 allreduce_dgrad=False, sequence_parallel=False, tp_group=None,
                                 grad_output_buffer=None)
        out = reduce_scatter_to_sequence_parallel(out, self.tp_group)
        if self.skip_bias_add:
            return out, self.bias
        return (out + self.bias if self.bias is not None else out), None


class SequenceParallelNorm:
    """torch LayerNorm or RMSNorm (by `config.normalization`, as megatron's torch-norm wrapper
    chooses, so numerics and parameter names are those of the non-SP build) in megatron's norm
    slot, its parameters tagged for the TP grad sum. megatron's wrapper itself refuses SP."""

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, **_):
        norms = {"LayerNorm": torch.nn.LayerNorm, "RMSNorm": torch.nn.RMSNorm}
        if config.normalization not in norms:
            raise ValueError(f"sequence parallelism on the portable backend supports {' and '.join(norms)}, "
                             f"got {config.normalization}")
        norm = norms[config.normalization](hidden_size, eps=eps)
        for p in norm.parameters():
            p.sequence_parallel = config.sequence_parallel
        return norm


class _NoRNGFork:
    """Stands in for megatron's CUDA RNG tracker on a CPU build: SP layers fork it around dropout,
    which the presets set to 0 (a CPU run has no per-TP-rank CUDA generator to fork)."""

    def fork(self, name: str = ""):
        return contextlib.nullcontext()


def use_portable_rng_tracker() -> None:
    """Install `_NoRNGFork` unless a tracker is already initialized (e.g. megatron's, on GPU)."""
    if not tp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED:
        tp_random._CUDA_RNG_STATE_TRACKER = _NoRNGFork()
        tp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


def sequence_parallel_block_spec(layer: ModuleSpec, layers_per_stage: int) -> ModuleSpec:
    """A portable layer spec -> the block spec with SP-capable linears and norms (the block's final
    norm included, which a layer spec cannot choose)."""
    layer = copy.deepcopy(layer)
    attn, mlp = layer.submodules.self_attention.submodules, layer.submodules.mlp.submodules
    attn.linear_qkv, attn.linear_proj = PortableColumnParallelLinear, PortableRowParallelLinear
    mlp.linear_fc1, mlp.linear_fc2 = PortableColumnParallelLinear, PortableRowParallelLinear
    layer.submodules.input_layernorm = SequenceParallelNorm
    layer.submodules.pre_mlp_layernorm = SequenceParallelNorm
    return ModuleSpec(module=TransformerBlock, submodules=TransformerBlockSubmodules(
        layer_specs=[layer] * layers_per_stage, layer_norm=SequenceParallelNorm))
