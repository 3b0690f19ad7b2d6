"""Posting one lowered p2p group (schedule/lower.py) and waiting for it, on the world group.

Every op goes through the default (world) group, created eagerly by the launcher, as one
`batch_isend_irecv` (a lone op is a batch of one); the caller posts its next group only after
`run` returned, which is NCCL's order. A zero-size tensor is not posted: both ends know its shape,
so both skip it.

A gloo send completes once its receiver has posted the matching receive and taken the data, but
until someone waits for it the sender is free to go on, so a list that deadlocks under NCCL passes
on gloo when sends are completed later. `strict` waits for every send inside its group, as NCCL does:
a deadlock then surfaces as a TimeoutError naming this rank, the group's index and ops, and the
peers that never posted theirs. Without it (gloo only) a group waits for its receives, and its sends
are completed at the next `drain` (the end of the step), or earlier by `release` once a later message
proves the receiver took them (comm/release.py; gloo reports a send's completion only through `wait`).
Under NCCL no timed wait is used: a timed `Work.wait` blocks the host on every group; the process
group's timeout and watchdog cover hangs.
"""

import time
from datetime import timedelta
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.comm.p2p import CommStats, default_backend, timed_waits

PostedOp = Tuple[str, int, torch.Tensor]  # ("send" | "recv", peer global rank, tensor)


class GroupTransport:
    def __init__(self, rank: int, stats: CommStats, timeout_s: float, strict: bool = False,
                 device: Optional[torch.device] = None):
        self.rank, self.stats, self.timeout_s, self.strict = rank, stats, timeout_s, strict
        # batched and untimed unless gloo carries this device's tensors (comm/p2p.py timed_waits)
        self.nccl = not timed_waits(default_backend(), "cpu" if device is None else device.type)
        if self.strict and self.nccl:
            raise ValueError("the strict p2p mode emulates NCCL on gloo; under NCCL it is the real thing")
        self.groups_posted = 0
        self._sends: List = []  # (work, tensor, label, item, peer) of sends left to complete (not strict)

    def run(self, ops: Sequence[PostedOp], label: str = "", item: int = -1) -> None:
        """Post `ops` as one batch and wait until every op met its match (strict, NCCL) or every
        receive did (gloo); `item` names the group for `release`."""
        index = self.groups_posted
        self.groups_posted += 1
        self.stats.groups += 1
        ops = [op for op in ops if op[2].numel()]
        if not ops:
            return
        if self.nccl:
            p2p = [dist.P2POp(dist.isend if kind == "send" else dist.irecv, t, peer) for kind, peer, t in ops]
            for w in dist.batch_isend_irecv(p2p):
                w.wait()
        else:  # gloo has no batching: its ops are independent, so posting them one by one is the same
            works = [(dist.isend if kind == "send" else dist.irecv)(t, peer) for kind, peer, t in ops]
            self._wait_gloo(ops, works, index, label, item)
        for kind, peer, t in ops:
            if kind == "send":
                self.stats.add_sent(t, header=False, dst=peer)
            else:
                self.stats.add_recv(t, header=False)

    def pending(self):
        """Buffers of sends posted but not yet complete."""
        return (s[1] for s in self._sends)

    def release(self, pairs: Sequence[Tuple[int, int]]) -> None:
        """Complete the sends of (item, peer) `pairs`, which their receivers are known to have taken
        (comm/release.py): each wait returns at once, and the buffers go."""
        done, keep = set(pairs), []
        for s in self._sends:
            if (s[3], s[4]) in done:
                self._complete(s, time.monotonic() + self.timeout_s)
            else:
                keep.append(s)
        self._sends = keep

    def _wait_gloo(self, ops: Sequence[PostedOp], works, index: int, label: str, item: int) -> None:
        """Receives first, then (strict) sends: each needs only its peer to have posted, so this order
        waits for nothing NCCL would not. gloo's works report completion only through `wait`."""
        deadline = time.monotonic() + self.timeout_s
        waits = [i for i, op in enumerate(ops) if op[0] == "recv"]
        sends = [i for i, op in enumerate(ops) if op[0] == "send"]
        if self.strict:
            waits += sends
        else:
            self._sends += [(works[i], ops[i][2], f"group #{index} {label}", item, ops[i][1]) for i in sends]
        for k, i in enumerate(waits):
            try:
                done = _wait(works[i], deadline - time.monotonic())
            except RuntimeError as e:  # a peer that timed out (or died) first closed the connection
                if not any(m in str(e) for m in _PEER_CLOSED):
                    raise
                raise TimeoutError(self._stuck(ops, waits[k:], index, label, "a peer closed the connection")) from None
            if not done:
                raise TimeoutError(self._stuck(ops, waits[k:], index, label))

    def _stuck(self, ops, left: Sequence[int], index: int, label: str, why: str = "") -> str:
        waits = sorted({f"{ops[i][0]}{'>' if ops[i][0] == 'send' else '<'}{ops[i][1]}" for i in left})
        mode = "strict (NCCL-like) " if self.strict else ""
        what = f"failed ({why})" if why else f"timed out after {self.timeout_s:.0f} s"
        return (f"rank {self.rank}: {mode}p2p group #{index} {label} {what}; "
                f"unmatched: {', '.join(waits)} (peers {sorted({ops[i][1] for i in left})} "
                "never posted the matching ops: a deadlock under NCCL's rules, or a peer that failed)")

    def drain(self) -> None:
        """Complete the sends left pending (not strict); their buffers are released here."""
        deadline = time.monotonic() + self.timeout_s
        for s in self._sends:
            self._complete(s, deadline)
        self._sends.clear()

    def _complete(self, send, deadline: float) -> None:
        work, _, label = send[:3]
        if not _wait(work, deadline - time.monotonic()):
            raise TimeoutError(f"rank {self.rank}: a send of p2p {label} was never received within "
                               f"{self.timeout_s:.0f} s (the peer failed, or stopped before its receive)")


_PEER_CLOSED = ("Connection closed by peer", "Connection reset", "Broken pipe")


def _wait(work, left: float) -> bool:
    """A timed gloo wait: False on timeout (gloo reports it as False or as a RuntimeError)."""
    try:
        return left > 0 and work.wait(timedelta(seconds=left)) is not False
    except RuntimeError as e:
        if "imed out" in str(e) or "imeout" in str(e):
            return False
        raise
