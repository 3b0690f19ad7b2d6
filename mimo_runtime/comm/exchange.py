"""The colocated counterpart of the bridge: redistribute encoder rows between layouts in-process.

With `placement: colocated` every rank holds every module, but an encoder may use a different
TP/DP layout than the language model (e.g. encoder dp2, language tp2 on the same 2 ranks). Each
rank's encoder then produced the rows of *its* encoder replica's samples, while its language replica
needs the rows of other samples. `exchange_rows` moves them along the bridge's routes inside
autograd: forward sends rows, backward sends their gradients back. Every rank builds the same
graph, so every rank runs the backward exchanges in the same order (sends are asynchronous).
"""

from typing import Sequence

import torch

from mimo_runtime.comm.bridge import Bridge


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: torch.Tensor, bridge: Bridge, enc_rows: Sequence[int], lang_rows: Sequence[int]):
        ctx.bridge, ctx.enc_rows, ctx.lang_rows = bridge, list(enc_rows), list(lang_rows)
        ctx.shape = (rows.shape[-1], rows.dtype, rows.device)
        bridge.send_forward(rows, enc_rows)
        return bridge.recv_forward(lang_rows, rows.shape[-1], rows.dtype, rows.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, dtype, device = ctx.shape
        ctx.bridge.send_backward(grad.contiguous(), ctx.lang_rows)
        return ctx.bridge.recv_backward(ctx.enc_rows, hidden, dtype, device), None, None, None


def exchange_rows(rows: torch.Tensor, bridge: Bridge, enc_rows: Sequence[int], lang_rows: Sequence[int]) -> torch.Tensor:
    """Rows of this rank's encoder samples in -> rows of its language samples out (differentiable)."""
    return _Exchange.apply(rows, bridge, enc_rows, lang_rows)
