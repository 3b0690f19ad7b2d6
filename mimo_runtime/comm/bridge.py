"""Bridge: encoder last stage <-> language stage 0 across different TP/DP layouts.

Forward: each encoder rank slices its output rows by destination (routes.py) and posts them;
each language rank receives its samples' rows from every source in sample order and checks
the row count against its own input_ids (the shape handshake). Backward: the reverse.
Rows are `(num_rows, hidden)`, sample by sample, as `align_embeddings_by_token_positions` expects.
When both modules share ranks (colocated placement with different layouts), a route from a rank to
itself is a local hand-over instead of a message.
"""

from itertools import accumulate
from typing import List, Sequence

import torch

from mimo_runtime.comm.p2p import CommStats, Outbox, recv_tensors, send_tensors
from mimo_runtime.comm.routes import Route, backward_routes, forward_routes, owned
from mimo_runtime.plan import ModulePlan


class Bridge:
    def __init__(self, enc: ModulePlan, lang: ModulePlan, global_mb: int, rank: int,
                 outbox: Outbox, stats: CommStats, timeout_s: float):
        self.enc, self.lang, self.rank = enc, lang, rank
        self.global_mb = global_mb
        self.outbox, self.stats, self.timeout_s = outbox, stats, timeout_s
        self.fwd = forward_routes(enc, lang, global_mb)
        self.bwd = backward_routes(enc, lang, global_mb)
        self._local = {}  # (direction, lo) -> rows this rank sent to itself

    def _first_sample(self, m: ModulePlan) -> int:
        return owned(m, m.coords(self.rank).dp, self.global_mb).start

    def _send(self, routes: List[Route], m: ModulePlan, rows: torch.Tensor, rows_per_sample: Sequence[int]) -> None:
        mine = [r for r in routes if r.src == self.rank]
        if not mine:
            return
        first = self._first_sample(m)
        offsets = [0] + list(accumulate(rows_per_sample))
        if offsets[-1] != rows.shape[0]:
            raise ValueError(f"{self.enc.name}: {rows.shape[0]} rows but the samples need {offsets[-1]}")
        for r in mine:
            block = rows[offsets[r.lo - first]:offsets[r.hi - first]]
            if r.dst == self.rank:
                self._local[(id(routes), r.lo)] = block.detach()
            else:
                send_tensors({"rows": block}, r.dst, self.outbox, self.stats)

    def _recv(self, routes: List[Route], m: ModulePlan, rows_per_sample: Sequence[int], hidden: int,
              dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
        first = self._first_sample(m)
        blocks = []
        for r in (r for r in routes if r.dst == self.rank):
            if r.src == self.rank:
                block = self._local.pop((id(routes), r.lo))
            else:
                block = recv_tensors(["rows"], r.src, dtype, device, self.stats, self.timeout_s)["rows"]
            want = sum(rows_per_sample[r.lo - first:r.hi - first])
            if block.shape[0] != want:
                raise ValueError(f"{self.enc.name}: {what} from rank {r.src} for samples {r.lo}-{r.hi - 1} "
                                 f"has {block.shape[0]} rows, expected {want} (special tokens in input_ids)")
            blocks.append(block.reshape(-1, hidden))
        return torch.cat(blocks) if blocks else torch.empty((0, hidden), dtype=dtype, device=device)

    # encoder side
    def send_forward(self, rows: torch.Tensor, rows_per_sample: Sequence[int]) -> None:
        self._send(self.fwd, self.enc, rows, rows_per_sample)

    def recv_backward(self, rows_per_sample: Sequence[int], hidden: int, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
        return self._recv(self.bwd, self.enc, rows_per_sample, hidden, dtype, device, "gradient")

    # language side
    def recv_forward(self, rows_per_sample: Sequence[int], hidden: int, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
        return self._recv(self.fwd, self.lang, rows_per_sample, hidden, dtype, device, "embeddings")

    def send_backward(self, grad: torch.Tensor, rows_per_sample: Sequence[int]) -> None:
        self._send(self.bwd, self.lang, grad, rows_per_sample)
