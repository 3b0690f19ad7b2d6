"""Receives posted ahead of the action that consumes them, for transfers of known shape.

gloo (like NCCL) moves an unbound-buffer message only once the receiver has posted its buffer, so a
receive posted at the moment it is needed costs a round trip on top of the transfer: "ready" goes to
the sender, then the payload comes back, each side waking a thread. Posting the next few receives of
a channel early lets the payload land while this rank computes. Order per channel is the schedule's
order, which is the order the sender posts (the validator checks it), so matching stays correct.
"""

from collections import deque
from typing import Deque, Dict, Hashable, List, Sequence, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.comm.p2p import CommStats, wait_work


class Inbox:
    def __init__(self, stats: CommStats, timeout_s: float, depth: int = 2, progress=None):
        self.stats, self.timeout_s, self.depth = stats, timeout_s, depth
        self.progress = progress  # called while waiting (p2p.wait_work)
        self._plan: Dict[Hashable, Deque[Tuple[Hashable, int, Sequence[int]]]] = {}  # channel -> not yet posted
        self._posted: Dict[Hashable, Tuple[object, torch.Tensor, int, Hashable]] = {}  # item -> (work, buf, src, ch)
        self._channel: Dict[Hashable, Hashable] = {}  # every expected item not yet taken -> its channel

    def expect(self, items: List[Tuple[Hashable, Hashable, int, Sequence[int]]], dtype: torch.dtype,
               device: torch.device) -> None:
        """(channel, item, src rank, shape) in the order this rank consumes them; posts each channel's first few."""
        self.dtype, self.device = dtype, device
        for channel, item, src, shape in items:
            self._plan.setdefault(channel, deque()).append((item, src, shape))
            self._channel[item] = channel
        for channel in self._plan:
            self._refill(channel)

    def _refill(self, channel: Hashable, until: Hashable = None) -> None:
        """Keep `depth` receives of `channel` posted (more if `until` is still queued: always in order)."""
        queue = self._plan[channel]
        posted = sum(1 for _, _, _, c in self._posted.values() if c == channel)
        while queue and (posted < self.depth or (until is not None and until not in self._posted)):
            item, src, shape = queue.popleft()
            buf = torch.empty(tuple(shape), dtype=self.dtype, device=self.device)
            self._posted[item] = (dist.irecv(buf, src) if buf.numel() else None, buf, src, channel)
            posted += 1

    def __contains__(self, item: Hashable) -> bool:
        return item in self._channel

    def take(self, item: Hashable) -> torch.Tensor:
        channel = self._channel.pop(item)
        if item not in self._posted:  # consumed out of the expected order: post everything before it first
            self._refill(channel, until=item)
        work, buf, src, channel = self._posted.pop(item)
        if work is not None:
            wait_work(work, src, self.timeout_s, self.progress, buf.device)
            self.stats.add_recv(buf, header=False)
        self._refill(channel)
        return buf

    def idle(self) -> bool:
        return not self._channel
