"""The colocated counterpart of the bridge: redistribute encoder rows between layouts in-process.

With `placement: colocated` every rank holds every module, but an encoder may use a different
TP/DP layout than the language model (e.g. encoder dp2, language tp2 on the same 2 ranks). Each
rank's encoder then produced the rows of *its* encoder replica's samples, while its language replica
needs the rows of other samples. `exchange_rows` moves them along the bridge's routes inside
autograd: forward sends rows, backward sends their gradients back. Each is one p2p group on the
bridge's GroupTransport, the ops lowered by comm/lowering.py (`RankOps.inner`), so it runs under the
strict (NCCL-like) transport and under NCCL. Every rank builds the same graph, so every rank runs
the backward exchanges in the same order, the reverse of the forward's. Rows travel in the wire
dtype (bf16 when both modules compute in bf16, train/precision.py) and come back in the rows' dtype;
their gradients travel in the wire dtype too.
"""

from typing import Optional, Sequence

import torch

from mimo_runtime.comm.bridge import Bridge


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: torch.Tensor, bridge: Bridge, enc_rows: Sequence[int], lang_rows: Sequence[int]):
        ctx.bridge, ctx.enc_rows, ctx.lang_rows = bridge, list(enc_rows), list(lang_rows)
        ctx.hidden = rows.shape[-1]
        return bridge.exchange_forward(rows, enc_rows, lang_rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows = ctx.bridge.exchange_backward(grad.contiguous(), ctx.lang_rows, ctx.enc_rows, ctx.hidden)
        return rows, None, None, None


def exchange_rows(rows: torch.Tensor, bridge: Bridge, enc_rows: Sequence[int], lang_rows: Sequence[int],
                  wire_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Rows of this rank's encoder samples in -> rows of its language samples out (differentiable)."""
    wire = rows if wire_dtype is None else rows.to(wire_dtype)  # the casts' backward casts the gradients
    return _Exchange.apply(wire, bridge, enc_rows, lang_rows).to(rows.dtype)
