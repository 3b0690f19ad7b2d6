"""Device-agnostic point-to-point transfer of dicts of tensors (gloo on CPU, NCCL on GPU).

Shapes vary between microbatches (token counts depend on how many images a sample has). The
trainer's lowered groups (p2p_groups.py) know every shape from the plan and the data; the paths here
that do not (bare lists, the colocated exchange) send a fixed-size header first: for each key, in
sorted order, its ndim and dims. Sends are posted asynchronously (the schedule is deadlock-free under "sends never block,
receives block"); `Outbox.wait()` completes them and keeps their buffers alive until then.

Waits carry a timeout only where gloo carries the tensor (`timed_waits`): a timed `Work.wait` under
NCCL blocks the host until the transfer is done, on every message; there the process group's own
timeout and watchdog turn a hang into an error instead.
"""

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

MAX_DIMS = 6


def timed_waits(backend: str, device_type: str) -> bool:
    """Whether a wait for a transfer of a `device_type` tensor may carry a timeout: only when the
    process group's backend for that device is gloo. `backend` is `dist.get_backend()`'s answer,
    one name ("gloo", "nccl") or a per-device map ("cpu:gloo,cuda:nccl")."""
    backend = backend.lower()
    if ":" not in backend:
        return backend == "gloo"
    carriers = dict(part.split(":", 1) for part in backend.split(","))
    return carriers.get(device_type) == "gloo"


def default_backend() -> str:
    return dist.get_backend() if dist.is_initialized() else "gloo"


def finish(work, device: torch.device, timeout_s: float):
    """Wait for `work` on a `device` tensor: timed on gloo (its result: False on timeout), untimed
    elsewhere (the process group's timeout covers it)."""
    if timed_waits(default_backend(), device.type):
        return work.wait(timedelta(seconds=timeout_s))
    return work.wait()


@dataclass
class CommStats:
    """Bytes this rank moved, split so tests can compare payload bytes with the theoretical minimum."""

    payload_sent: int = 0
    payload_recv: int = 0
    header_sent: int = 0
    header_recv: int = 0
    messages_sent: int = 0
    groups: int = 0  # lowered p2p groups posted (p2p_groups.py), empty ones included
    sent_to: Dict[int, int] = field(default_factory=dict)  # payload bytes by receiving global rank (when known)
    outputs_freed: int = 0  # forward outputs whose storage went once sent (train/executor.py _free_output)

    def add_sent(self, t: torch.Tensor, header: bool, dst: Optional[int] = None) -> None:
        n = t.numel() * t.element_size()
        if header:
            self.header_sent += n
        else:
            self.payload_sent += n
            self.messages_sent += 1
            if dst is not None:
                self.sent_to[dst] = self.sent_to.get(dst, 0) + n

    def add_recv(self, t: torch.Tensor, header: bool) -> None:
        n = t.numel() * t.element_size()
        if header:
            self.header_recv += n
        else:
            self.payload_recv += n


@dataclass
class Outbox:
    """Sends in flight. Buffers stay referenced until `wait` (or `release`) so the transport may read them.

    `item` is what the poster is running (the executor's item index): `release` completes the sends
    of one item to one peer that are known to have been taken (comm/release.py)."""

    timeout_s: float
    pending: List = field(default_factory=list)  # (work, tensor, dst, item)
    item: int = -1

    def post(self, tensor: torch.Tensor, dst: int) -> None:
        tensor = tensor.detach().contiguous()
        self.pending.append((dist.isend(tensor, dst), tensor, dst, self.item))

    def buffers(self):
        return (t for _, t, _, _ in self.pending)

    def release(self, pairs: Sequence[Tuple[int, int]]) -> None:
        """Complete the sends of (item, peer) `pairs`: their receivers took them, so the waits return at once."""
        done = set(pairs)
        keep = []
        for entry in self.pending:
            if (entry[3], entry[2]) in done:
                finish(entry[0], entry[1].device, self.timeout_s)
            else:
                keep.append(entry)
        self.pending = keep

    def wait(self) -> None:
        for work, t, *_ in self.pending:
            finish(work, t.device, self.timeout_s)
        self.pending.clear()


def _header(tensors: Dict[str, torch.Tensor]) -> torch.Tensor:
    rows = []
    for key in sorted(tensors):
        shape = list(tensors[key].shape)
        if len(shape) > MAX_DIMS:
            raise ValueError(f"tensor '{key}' has {len(shape)} dims; at most {MAX_DIMS} can be sent")
        rows.append([len(shape)] + shape + [0] * (MAX_DIMS - len(shape)))
    return torch.tensor(rows, dtype=torch.int64)


def header_of(t: Optional[torch.Tensor]) -> torch.Tensor:
    """The shape header of one tensor to send, or (None) a buffer to receive one into."""
    if t is None:
        return torch.empty((1, MAX_DIMS + 1), dtype=torch.int64)
    return _header({"t": t})


def shape_of(header: torch.Tensor) -> Tuple[int, ...]:
    row = header[0].tolist()
    return tuple(row[1:1 + row[0]])


def send_tensors(tensors: Dict[str, torch.Tensor], dst: int, outbox: Outbox, stats: CommStats,
                 header: bool = True) -> None:
    """Post header + payloads for `tensors` to global rank `dst` (asynchronous).

    `header=False` when the receiver already knows every shape (it passes `shapes` to recv_tensors):
    one message per tensor instead of two, which halves the wake-ups a small transfer costs.
    """
    if header:
        head = _header(tensors)
        outbox.post(head, dst)
        stats.add_sent(head, header=True)
    for key in sorted(tensors):
        t = tensors[key]
        if t.numel():
            outbox.post(t, dst)
            stats.add_sent(t, header=False, dst=dst)


def recv_tensors(keys: Sequence[str], src: int, dtype: torch.dtype, device: torch.device,
                 stats: CommStats, timeout_s: float,
                 shapes: Optional[Dict[str, Sequence[int]]] = None,
                 progress: Optional[Callable[[], bool]] = None) -> Dict[str, torch.Tensor]:
    """Blocking receive of the dict `send_tensors` posted from global rank `src`.

    With `shapes` (key -> shape, known to both sides) no header is read: the sender used header=False.
    `progress` is called while waiting (see `wait_work`).
    """
    keys = sorted(keys)
    if shapes is None:
        header = torch.empty((len(keys), MAX_DIMS + 1), dtype=torch.int64)
        _recv(header, src, timeout_s, progress)
        stats.add_recv(header, header=True)
        dims = [row[1:1 + row[0]] for row in header.tolist()]
    else:
        dims = [list(shapes[key]) for key in keys]
    out = {}
    for key, shape in zip(keys, dims):
        t = torch.empty(shape, dtype=dtype, device=device)
        if t.numel():
            _recv(t, src, timeout_s, progress)
            stats.add_recv(t, header=False)
        out[key] = t
    return out


def _recv(t: torch.Tensor, src: int, timeout_s: float, progress: Optional[Callable[[], bool]] = None) -> None:
    wait_work(dist.irecv(t, src), src, timeout_s, progress, t.device)


def wait_work(work, src: int, timeout_s: float, progress: Optional[Callable[[], bool]] = None,
              device: torch.device = torch.device("cpu")) -> None:
    """Wait for a posted receive from `src`; TimeoutError after `timeout_s`.

    `progress` (comm/shm.py's LocalChannels.progress) moves this rank's shared-memory sends queued
    behind a full ring and says whether any are left; while some are, the wait polls and keeps them
    moving, so a rank that needs them is never stuck behind this one.
    """
    start, pause = time.monotonic(), 2e-5
    while progress is not None and progress() and not work.is_completed():
        if time.monotonic() - start > timeout_s:
            break
        time.sleep(pause)
        pause = min(2 * pause, 1e-3)
    left = max(timeout_s - (time.monotonic() - start), 1e-3)
    if not finish(work, device, left):  # also raises what the transport reported, if it failed
        raise TimeoutError(f"receive from rank {src} timed out after {timeout_s:.0f} s")
