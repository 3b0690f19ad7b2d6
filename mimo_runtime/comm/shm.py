"""Same-host stage-to-stage transfers through shared memory, for messages whose shape both sides know.

Why: on CPU, a gloo message between two processes of one machine wakes four threads (each side's
gloo I/O thread, then the waiting caller) and took 0.1-0.4 ms one way on the 2-core build machine;
a ring in /dev/shm that the receiver polls costs a memcpy on each side. (NCCL does the same within
a node with its SHM/P2P transports; GPU runs keep NCCL, this is the gloo path only.)

One ring per (sender, receiver) pair, created by the receiver; one producer, one consumer:

    [head int64 | pad to 64][tail int64 | pad to 128][slot 0][slot 1]...     slot: [nbytes int64 | pad 64][payload]

`head` counts messages written (only the sender stores it), `tail` messages read (only the
receiver). Message k lives in slot k % slots: the sender copies the payload, then stores head =
k + 1. x86-64 keeps stores in order and loads in order (TSO), so a receiver that sees the new head
sees the payload; the transport is therefore enabled on x86-64 Linux only.

Sends never block (what the schedule validator assumes): when a ring is full the message waits in
a local queue that every wait of this rank, and `flush()`, push along. Receives poll (spinning only
when every rank of the host has a core of its own), then sleep in short, growing pauses; they raise
ConnectionError within a second of the peer's process exiting, TimeoutError after `timeout_s`.
"""

import math
import mmap
import os
import platform
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.comm.p2p import CommStats

HEAD, TAIL, SLOTS_AT, SLOT_HEADER = 0, 8, 128, 64  # TAIL in int64 units (byte 64)
RING_BYTES_MAX = 64 << 20  # per ring: slots are dropped down to 2 before a ring grows past this
SPIN_S = float(os.environ.get("MIMO_SHM_SPIN_S", "0.05"))  # poll without sleeping this long (host not oversubscribed)
TRANSPORTS = ("auto", "shm", "gloo")


def supported() -> bool:
    """Linux on x86-64 with a writable /dev/shm (the ordering argument above needs TSO)."""
    return (platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
            and os.access("/dev/shm", os.W_OK))


def host_key() -> str:
    """Same key <=> same machine, /dev/shm and process ids: hostname, this boot's id, pid namespace.

    `MIMO_FAKE_HOSTS=a,a,b,b` (tests) splits one machine into hosts: rank i is on host i of the list."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        boot, pidns = "", 0
    fake = os.environ.get("MIMO_FAKE_HOSTS")
    suffix = f"/{fake.split(',')[dist.get_rank()]}" if fake and dist.is_initialized() else ""
    return f"{socket.gethostname()}/{boot}/{pidns}{suffix}"


def host_keys() -> Optional[List[str]]:
    """Collective over the default group: every rank's host_key, by rank (None without a group)."""
    if not dist.is_initialized():
        return None
    keys: List[str] = [None] * dist.get_world_size()
    dist.all_gather_object(keys, host_key())
    return keys


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class HostInfo:
    key: str
    cpus: int
    supported: bool
    pid: int = 0


def shm_hosts(infos: Sequence[HostInfo], transport: str) -> Dict[str, bool]:
    """Host key -> whether its ranks talk through shared memory.

    "auto" uses shared memory on a supported host whose ranks each have a core ("shm" also when
    they do not: correct, just slower than gloo there); "gloo" never.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"p2p transport '{transport}': expected one of {', '.join(TRANSPORTS)}")
    return {key: all(i.supported for i in here) and (transport == "shm" or (transport == "auto" and _fits(here)))
            for key, here in _by_host(infos).items()}


def oversubscribed(infos: Sequence[HostInfo], key: str) -> bool:
    return not _fits([i for i in infos if i.key == key])


def _by_host(infos: Sequence[HostInfo]) -> Dict[str, List[HostInfo]]:
    hosts: Dict[str, List[HostInfo]] = {}
    for i in infos:
        hosts.setdefault(i.key, []).append(i)
    return hosts


def _fits(here: Sequence[HostInfo]) -> bool:
    """Every rank of the host has a core of its own."""
    return len(here) <= min(i.cpus for i in here)


class Ring:
    """One direction between two processes: `slots` slots of `slot_bytes` in a /dev/shm file."""

    def __init__(self, path: str, slot_bytes: int, slots: int, create: bool):
        self.path, self.slots = path, slots
        self.slot_bytes = -(-slot_bytes // 64) * 64 + SLOT_HEADER
        size = SLOTS_AT + self.slot_bytes * slots
        fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        try:
            if create:  # reserve the pages now: a full /dev/shm fails here (OSError), not later with SIGBUS
                os.posix_fallocate(fd, 0, size)
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._ctr = memoryview(self._mm).cast("q")
        self._bytes = torch.frombuffer(self._mm, dtype=torch.uint8)
        self._views: Dict[Tuple[int, torch.dtype, Tuple[int, ...]], torch.Tensor] = {}
        self.head, self.tail = self._ctr[HEAD], self._ctr[TAIL]  # this side's own count is authoritative

    @property
    def capacity(self) -> int:
        return self.slot_bytes - SLOT_HEADER

    def _slot(self, k: int) -> int:
        return SLOTS_AT + (k % self.slots) * self.slot_bytes

    def _payload(self, k: int, dtype: torch.dtype, shape: Tuple[int, ...]) -> torch.Tensor:
        """Message k's payload as a tensor; cached per (slot, dtype, shape): one torch op per transfer."""
        key = (k % self.slots, dtype, shape)
        view = self._views.get(key)
        if view is None:
            at = self._slot(k) + SLOT_HEADER
            n = math.prod(shape) * dtype.itemsize
            view = self._views[key] = self._bytes[at:at + n].view(dtype).view(shape)
        return view

    # ---- sender side ----
    def full(self) -> bool:
        return self.head - self._ctr[TAIL] >= self.slots

    def put(self, t: torch.Tensor) -> None:
        """Copy `t` into the next slot and publish it; the caller checked `not full()` and the size."""
        n = t.numel() * t.element_size()
        self._ctr[self._slot(self.head) // 8] = n
        if n:
            self._payload(self.head, t.dtype, tuple(t.shape)).copy_(t)
        self.head += 1
        self._ctr[HEAD] = self.head  # published last

    # ---- receiver side ----
    def ready(self) -> bool:
        return self._ctr[HEAD] != self.tail

    def take(self, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The oldest message, copied out, and its slot freed; the caller checked `ready()`."""
        n = math.prod(shape) * dtype.itemsize
        sent = self._ctr[self._slot(self.tail) // 8]
        if sent != n:
            raise RuntimeError(f"shared-memory message {self.tail} of {self.path} has {sent} bytes, the receiver "
                               f"expected {n} ({shape} {dtype}): the two sides disagree on the transfer's shape "
                               "or dtype")
        out = self._payload(self.tail, dtype, shape).clone() if n else torch.empty(shape, dtype=dtype)
        self.tail += 1
        self._ctr[TAIL] = self.tail
        return out

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self._views.clear()
        del self._bytes
        self._ctr.release()
        self._mm.close()


class LocalChannels:
    """This rank's rings: inbound by source rank, outbound by destination rank (see the module doc)."""

    def __init__(self, inbound: Dict[int, Ring], outbound: Dict[int, Ring], stats: CommStats, timeout_s: float,
                 spin_s: float = SPIN_S, pids: Optional[Dict[int, int]] = None):
        self.inbound, self.outbound = inbound, outbound
        self.pids = pids or {}  # peer rank -> its process id: a wait notices a peer that has exited
        self.stats, self.timeout_s, self.spin_s = stats, timeout_s, spin_s
        self._queued: Dict[int, Deque[torch.Tensor]] = {dst: deque() for dst in outbound}

    def carries(self, peer: int, nbytes: int, sending: bool) -> bool:
        """Whether a message of `nbytes` to/from `peer` goes through shared memory (both sides agree)."""
        ring = (self.outbound if sending else self.inbound).get(peer)
        return ring is not None and nbytes <= ring.capacity

    def send(self, t: torch.Tensor, dst: int) -> None:
        """Post `t` to `dst`; never blocks (a full ring queues it)."""
        t = t.detach().contiguous()
        self.stats.add_sent(t, header=False)
        queue = self._queued[dst]
        if queue or self.outbound[dst].full():
            queue.append(t)
        else:
            self.outbound[dst].put(t)

    def recv(self, src: int, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        ring = self.inbound[src]
        self._wait(ring.ready, f"receive from rank {src}", [src])
        out = ring.take(tuple(shape), dtype).to(device)
        self.stats.add_recv(out, header=False)
        return out

    def progress(self) -> bool:
        """Move queued sends into rings that have room again; True while some are still queued."""
        for dst, queue in self._queued.items():
            ring = self.outbound[dst]
            while queue and not ring.full():
                ring.put(queue.popleft())
        return self.pending()

    def pending(self) -> bool:
        return any(self._queued.values())

    def flush(self) -> None:
        """Wait until every queued send sits in its ring (the receivers have room)."""
        waiting = [d for d, q in self._queued.items() if q]
        self._wait(lambda: not self.progress(), "sends to " + ", ".join(f"rank {d}" for d in waiting), waiting)

    def _wait(self, ready, what: str, peers: Sequence[int]) -> None:
        if ready():
            return
        start = checked = time.monotonic()
        pause = 0.0
        while True:
            for _ in range(200):
                if ready():
                    return
            self.progress()
            now = time.monotonic()
            if now - start > self.timeout_s:
                raise TimeoutError(f"{what} timed out after {self.timeout_s:.0f} s (shared memory)")
            if now - checked > 0.5:  # a peer that exited never writes again: say so now, not at the timeout
                checked = now
                gone = [p for p in peers if p in self.pids and not alive(self.pids[p])]
                if gone:
                    raise ConnectionError(f"{what}: rank {gone[0]} (pid {self.pids[gone[0]]}) has exited")
            if now - start > self.spin_s:
                pause = min(max(2 * pause, 2e-5), 1e-3)
                time.sleep(pause)

    def close(self) -> None:
        for ring in list(self.inbound.values()) + list(self.outbound.values()):
            ring.close()
        self.inbound, self.outbound = {}, {}


def connect(inbound: Dict[int, int], outbound: Iterable[int], stats: CommStats, timeout_s: float,
            transport: str = "auto", slots: int = 16) -> Optional[LocalChannels]:
    """Collective over the default group: every rank calls it, in the same order as other collectives.

    `inbound` maps each source rank this rank receives stage messages from to the largest message
    in bytes; `outbound` lists the ranks it sends to. Returns the channels that could be made (pairs
    on one host that `shm_hosts` allows), or None when there are none for this rank.
    """
    if transport == "gloo" or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    rank = dist.get_rank()
    me = HostInfo(host_key(), usable_cpus(), supported(), os.getpid())
    infos: List[HostInfo] = [None] * dist.get_world_size()
    dist.all_gather_object(infos, me)
    allowed = shm_hosts(infos, transport)
    local = {r for r, i in enumerate(infos) if i.key == me.key and allowed[me.key]}

    made: Dict[int, Ring] = {}
    for src, nbytes in inbound.items():
        if src in local:
            per_slot = max(nbytes, 8)
            n = max(2, min(slots, RING_BYTES_MAX // per_slot))
            path = f"/dev/shm/mimo-{os.getpid()}-{src}-to-{rank}-{_next_id()}"
            try:
                made[src] = Ring(path, per_slot, n, create=True)
            except OSError:  # /dev/shm too small (containers default to 64 MiB): this pair stays on gloo
                if os.path.exists(path):
                    os.unlink(path)
    offers: List[Dict[int, Tuple[str, int, int]]] = [None] * len(infos)
    dist.all_gather_object(offers, {src: (r.path, r.capacity, r.slots) for src, r in made.items()})

    attached: Dict[int, Ring] = {}
    for dst in outbound:
        offer = offers[dst].get(rank)
        if offer is not None:
            try:
                attached[dst] = Ring(offer[0], offer[1], offer[2], create=False)
            except OSError:
                pass  # another /dev/shm after all (a container): this pair stays on gloo
    ok: List[List[int]] = [None] * len(infos)
    dist.all_gather_object(ok, sorted(attached))
    for ring in made.values():
        ring.unlink()  # both sides have it mapped: the memory lives until both close, nothing is left on a crash
    inbound_ok = {src: r for src, r in made.items() if rank in ok[src]}
    for src in set(made) - set(inbound_ok):
        made[src].close()
    if not inbound_ok and not attached:
        return None
    return LocalChannels(inbound_ok, attached, stats, timeout_s, 0.0 if oversubscribed(infos, me.key) else SPIN_S,
                         {peer: infos[peer].pid for peer in set(inbound_ok) | set(attached)})


_ids = iter(range(1 << 62))


def _next_id() -> int:
    return next(_ids)
