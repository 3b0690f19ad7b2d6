"""Bridge: encoder last stage <-> language stage 0 across different TP/CP/DP layouts.

Forward: each encoder rank slices its output rows by destination (routes.py) and posts them;
each language rank receives its samples' rows from every source in sample order and checks
the row count against its own input_ids (the shape handshake). Backward: the reverse.
Rows are `(num_rows, hidden)`, sample by sample, as `align_embeddings_by_token_positions` expects.
Blocks travel in the dtype they are given and receivers allocate the dtype they are told: the
executor passes the wire dtype (bf16 when both modules compute in bf16, train/precision.py).

When the language model cuts its sequences over several slots (context parallelism, or sequence
parallelism: plan/sequence.py), the encoder side describes each sample by the slot of each of its
rows instead of a row count, and a language rank gets (and sends gradients for) only its slot's
rows. When both modules share ranks (colocated placement with different layouts), a route from a
rank to itself is a local hand-over instead of a message.

Given each rank's host (`hosts`), a block crosses to another host once per receiving group there
(routes.py): the group's leader passes each block it receives on to the group's other ranks on its
host as soon as it has it (a relay), so no rank waits for a leader that waits for it. The trainer
posts the lowered programs instead (comm/lowering.py): the blocks come from `forward_blocks`,
`embedding_rows`, `gradient_blocks` and `gradient_index`, and a leader's relays are the group after
its receive. A colocated rank's exchange posts its one group itself (`exchange_forward`/`_backward`).
"""

from collections import Counter
from itertools import accumulate
from typing import List, Optional, Sequence, Tuple, Union

import torch

from mimo_runtime.comm.p2p import CommStats, Outbox, recv_tensors, send_tensors
from mimo_runtime.comm.routes import Route, bridge_routes, owned, relayed
from mimo_runtime.plan import ModulePlan

# per sample: a row count (every row in slot 0), or the slot of each of its rows
RowSpec = Sequence[Union[int, Sequence[int]]]


class Bridge:
    def __init__(self, enc: ModulePlan, lang: ModulePlan, global_mb: int, rank: int,
                 outbox: Outbox, stats: CommStats, timeout_s: float, progress=None,
                 hosts: Optional[Sequence[str]] = None, groups=None):
        self.enc, self.lang, self.rank = enc, lang, rank
        self.groups = groups  # the p2p_groups.GroupTransport a colocated exchange posts its group on
        self.progress = progress  # called while a receive waits (p2p.wait_work)
        self.global_mb = global_mb
        self.outbox, self.stats, self.timeout_s = outbox, stats, timeout_s
        self.fwd, self.bwd = bridge_routes(enc, lang, global_mb, hosts)
        self.bytes_to: Counter = Counter()  # payload bytes this rank's bridge sent, by destination rank
        self.slots = lang.cp * lang.sequence_shards
        self._local = {}  # (direction, lo) -> rows this rank sent to itself

    def _first_sample(self, m: ModulePlan) -> int:
        return owned(m, m.coords(self.rank).dp, self.global_mb).start

    def _slot_lists(self, rows_per_sample: RowSpec) -> List[List[int]]:
        out = []
        for x in rows_per_sample:
            if isinstance(x, int):
                if self.slots > 1 and x:
                    raise ValueError(f"{self.enc.name}: the language model cuts each sequence into {self.slots} "
                                     "slots (context/sequence parallelism): give each row's slot, not a count")
                out.append([0] * x)
            else:
                out.append(list(x))
        return out

    def _encoder_index(self, slots: List[List[int]], lo: int, hi: int, slot: int) -> torch.Tensor:
        """Indices, into this encoder rank's rows, of samples lo..hi-1's rows in `slot`, in order."""
        first = self._first_sample(self.enc)
        offsets = [0] + list(accumulate(len(s) for s in slots))
        idx = [offsets[i - first] + j for i in range(lo, hi) for j, s in enumerate(slots[i - first]) if s == slot]
        return torch.tensor(idx, dtype=torch.long)

    def _post(self, block: torch.Tensor, r: Route, routes) -> None:
        if r.dst == self.rank:
            self._local[(id(routes), r.lo)] = block.detach()
        else:
            send_tensors({"rows": block}, r.dst, self.outbox, self.stats)
            self.bytes_to[r.dst] += block.numel() * block.element_size()

    def _take(self, r: Route, routes, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The block of route `r`, passed on at once to the ranks this rank relays it to."""
        if r.src == self.rank:
            return self._local.pop((id(routes), r.lo))
        block = recv_tensors(["rows"], r.src, dtype, device, self.stats, self.timeout_s, progress=self.progress)["rows"]
        for x in relayed(routes, r):
            self._post(block, x, routes)
        return block

    def _check(self, block: torch.Tensor, r: Route, want: int, what: str) -> None:
        if block.shape[0] != want:
            raise ValueError(f"{self.enc.name}: {what} from rank {r.src} for samples {r.lo}-{r.hi - 1} "
                             f"has {block.shape[0]} rows, expected {want} (special tokens in input_ids)")

    # encoder side
    def forward_blocks(self, rows: torch.Tensor, rows_per_sample: RowSpec) -> List[Tuple[Route, torch.Tensor]]:
        """This encoder rank's outgoing blocks, one per route, in route order."""
        mine = [r for r in self.fwd if r.src == self.rank and r.via < 0]  # relays: _take
        if not mine:
            return []
        slots = self._slot_lists(rows_per_sample)
        if sum(len(s) for s in slots) != rows.shape[0]:
            raise ValueError(f"{self.enc.name}: {rows.shape[0]} rows but the samples need {sum(len(s) for s in slots)}")
        return [(r, rows.index_select(0, self._encoder_index(slots, r.lo, r.hi, self.lang.slot(r.dst)).to(rows.device)))
                for r in mine]

    def send_forward(self, rows: torch.Tensor, rows_per_sample: RowSpec) -> None:
        for r, block in self.forward_blocks(rows, rows_per_sample):
            self._post(block, r, self.fwd)

    def gradient_index(self, rows_per_sample: RowSpec) -> List[Tuple[Route, torch.Tensor]]:
        """Per incoming gradient route: where its rows go in this encoder rank's rows (known in advance)."""
        slots = self._slot_lists(rows_per_sample)
        return [(r, self._encoder_index(slots, r.lo, r.hi, self.lang.slot(r.origin))) for r in self.bwd
                if r.dst == self.rank]

    def recv_backward(self, rows_per_sample: RowSpec, hidden: int, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
        total = sum(len(s) for s in self._slot_lists(rows_per_sample))
        out = torch.zeros((total, hidden), dtype=dtype, device=device)
        for r, idx in self.gradient_index(rows_per_sample):
            block = self._take(r, self.bwd, dtype, device)
            self._check(block, r, idx.numel(), "gradient")
            out.index_copy_(0, idx.to(device), block.reshape(-1, hidden))
        return out

    # language side: this rank's slot only, so plain row counts per sample
    def embedding_rows(self, rows_per_sample: Sequence[int]) -> List[Tuple[Route, int]]:
        """Per incoming forward route: how many rows it carries, from this rank's own input_ids."""
        first = self._first_sample(self.lang)
        return [(r, sum(rows_per_sample[r.lo - first:r.hi - first])) for r in self.fwd if r.dst == self.rank]

    def recv_forward(self, rows_per_sample: Sequence[int], hidden: int, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
        blocks = []
        for r, want in self.embedding_rows(rows_per_sample):
            block = self._take(r, self.fwd, dtype, device)
            self._check(block, r, want, "embeddings")
            blocks.append(block.reshape(-1, hidden))
        return torch.cat(blocks) if blocks else torch.empty((0, hidden), dtype=dtype, device=device)

    def gradient_blocks(self, grad: torch.Tensor, rows_per_sample: Sequence[int]) -> List[Tuple[Route, torch.Tensor]]:
        """This language rank's outgoing gradient blocks, one per route, in route order."""
        mine = [r for r in self.bwd if r.src == self.rank and r.via < 0]  # relays: _take
        if not mine:
            return []
        first = self._first_sample(self.lang)
        offsets = [0] + list(accumulate(rows_per_sample))
        if offsets[-1] != grad.shape[0]:
            raise ValueError(f"{self.enc.name}: {grad.shape[0]} gradient rows but the samples need {offsets[-1]}")
        return [(r, grad[offsets[r.lo - first]:offsets[r.hi - first]]) for r in mine]

    def send_backward(self, grad: torch.Tensor, rows_per_sample: Sequence[int]) -> None:
        for r, block in self.gradient_blocks(grad, rows_per_sample):
            self._post(block, r, self.bwd)

    # a colocated rank's exchange (comm/exchange.py): its sends and receives as one p2p group
    def exchange_forward(self, rows: torch.Tensor, enc_rows: RowSpec, lang_rows: Sequence[int]) -> torch.Tensor:
        hidden, dtype, device = rows.shape[-1], rows.dtype, rows.device
        out = self._exchange(self.forward_blocks(rows, enc_rows), self.embedding_rows(lang_rows),
                             lambda n: torch.empty((n, hidden), dtype=dtype, device=device), "exchange forward")
        return torch.cat(out) if out else torch.empty((0, hidden), dtype=dtype, device=device)

    def exchange_backward(self, grad: torch.Tensor, lang_rows: Sequence[int], enc_rows: RowSpec,
                          hidden: int) -> torch.Tensor:
        where = self.gradient_index(enc_rows)
        out = torch.zeros((sum(len(s) for s in self._slot_lists(enc_rows)), hidden), dtype=grad.dtype,
                          device=grad.device)
        got = self._exchange(self.gradient_blocks(grad, lang_rows), [(r, idx.numel()) for r, idx in where],
                             lambda n: torch.empty((n, hidden), dtype=grad.dtype, device=grad.device),
                             "exchange backward")
        for (_, idx), block in zip(where, got):
            out.index_copy_(0, idx.to(grad.device), block.reshape(-1, hidden))
        return out

    def _exchange(self, blocks, incoming, empty, label: str) -> List[torch.Tensor]:
        """Post this rank's `blocks` and receive its `incoming` (route, rows) in one group, the ops in
        route order as comm/lowering.py lowers them: sends, then receives; routes to itself stay local."""
        local = {r: b.detach() for r, b in blocks if r.dst == self.rank}
        got = [local.pop(r) if r.src == self.rank else empty(n) for r, n in incoming]
        ops = [("send", r.dst, b.detach().contiguous()) for r, b in blocks if r.dst != self.rank] + \
            [("recv", r.src, b) for (r, _), b in zip(incoming, got) if r.src != self.rank]
        if ops:  # the lowering has no group where a rank exchanges nothing with others
            self.groups.run(ops, f"{self.enc.name} {label}")
        return got
