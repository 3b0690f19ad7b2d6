"""Per-module compute precision: `precision: bf16` runs a module's forward (and so its backward)
under autocast, with fp32 master weights and fp32 gradients.

Parameters stay fp32 (autocast casts them per op), so `.grad` is fp32 and the gradient reduction
over dp_cp, the global norm, clipping and the optimizer step are all fp32 (megatron's "fp32 main
params and grads"). Outputs are cast back to fp32, so the loss is fp32. What crosses a boundary
between ranks travels in `wire_dtype`: bf16 when every module on both sides computes in bf16
(a stage's hidden states, the bridge's embedding rows, and their gradients back), half the bytes
of fp32; the sender casts, the receiver keeps the bf16 tensor as the autograd leaf (so the gradient
it sends back is bf16 too) and hands the module an fp32 cast of it. CUDA runs take the same path.
"""

import functools
from typing import Any

import torch
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan

DTYPES = {"bf16": torch.bfloat16}


def wire_dtype(plan: Plan, modules, compute_dtype: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of a message between `modules` (one module's stages, or an encoder and the language
    model across the bridge): bf16 only when all of them compute in bf16, so an fp32 module never
    sees (nor sends) values rounded to bf16; otherwise the parameters' dtype, bit for bit as before."""
    dtypes = {DTYPES.get(plan.topology.modules[name].precision) for name in modules}
    return dtypes.pop() if len(dtypes) == 1 and None not in dtypes else compute_dtype


def module_roots(model, name: str):
    """The module's root modules on this rank: every interleaved chunk."""
    return model.language_modules() if name == LANG else model.encoder_chunks(name)


def apply_precision(model, plan: Plan, rank: int) -> None:
    for name in plan.modules_on(rank):
        dtype = DTYPES.get(plan.topology.modules[name].precision)
        for root in module_roots(model, name) if dtype is not None else []:
            device_type = next(root.parameters()).device.type
            root.forward = autocast_forward(root.forward, device_type, dtype)
            for layer in root.modules():
                if isinstance(layer, (ColumnParallelLinear, RowParallelLinear)):
                    layer._forward_impl = autocast_safe_linear(layer._forward_impl, device_type)


def autocast_forward(forward, device_type: str, dtype: torch.dtype):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        return to_fp32(out)

    return run


def autocast_safe_linear(forward_impl, device_type: str):
    """megatron's linear autograd functions declare autocast for CUDA only: under CPU autocast their
    forward runs in bf16 but their backward multiplies a bf16 grad with the saved fp32 weight. Cast
    input, weight and bias to the autocast dtype before entering, so everything they save matches;
    the casts' backward returns fp32 gradients to the fp32 parameters. Wraps the instance's own
    `_forward_impl` (subclasses such as the sequence-parallel linears keep their part)."""

    @functools.wraps(forward_impl)
    def run(input, weight, bias=None, **kwargs):
        if not torch.is_autocast_enabled(device_type):
            return forward_impl(input=input, weight=weight, bias=bias, **kwargs)
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return forward_impl(input=input.to(dtype), weight=weight.to(dtype),
                                bias=None if bias is None else bias.to(dtype), **kwargs)

    return run


def to_fp32(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, dict):
        return {k: to_fp32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_fp32(v) for v in x)
    return x
