"""Shared-memory stage-to-stage channels: host decisions (pure), rings in one process, and real processes."""

import itertools
import os
import subprocess
import sys
import time

import pytest
import torch

from mimo_runtime.comm import CommStats, shm
from mimo_runtime.launch.spawn import spawn

needs_shm = pytest.mark.skipif(not shm.supported(), reason="shared-memory transport needs x86-64 Linux /dev/shm")


# ---- which hosts use it (pure) ----
def _hosts(layout):
    """[(host key, cpus, supported)] per host -> one HostInfo per rank, ranks of a host contiguous."""
    return [shm.HostInfo(k, cpus, ok) for k, n, cpus, ok in layout for _ in range(n)]


def test_auto_uses_shared_memory_only_where_every_rank_has_a_core():
    infos = _hosts([("a", 2, 2, True), ("b", 8, 2, True), ("c", 4, 16, False)])
    assert shm.shm_hosts(infos, "auto") == {"a": True, "b": False, "c": False}
    assert shm.shm_hosts(infos, "shm") == {"a": True, "b": True, "c": False}  # forced: still not where unsupported
    assert shm.shm_hosts(infos, "gloo") == {"a": False, "b": False, "c": False}
    assert shm.oversubscribed(infos, "b") and not shm.oversubscribed(infos, "a")
    with pytest.raises(ValueError, match="p2p transport 'nccl'"):
        shm.shm_hosts(infos, "nccl")


def test_host_decisions_on_a_generated_16k_rank_cluster():
    """2,048 hosts of 8 ranks; cpus and support vary by host; every host decided by its own facts."""
    layout = [(f"h{i}", 8, (4, 8, 64)[i % 3], i % 5 != 0) for i in range(2048)]
    infos = _hosts(layout)
    assert len(infos) == 16384
    got = shm.shm_hosts(infos, "auto")
    for key, n, cpus, ok in layout:
        assert got[key] == (ok and n <= cpus)


# ---- one ring, both ends in this process ----
@pytest.fixture
def pair(tmp_path):
    """(receiver ring, sender ring) on one /dev/shm file with 3 slots of 64 bytes."""
    if not shm.supported():
        pytest.skip("shared-memory transport needs x86-64 Linux /dev/shm")
    path = f"/dev/shm/mimo-test-{os.getpid()}-{time.monotonic_ns()}"
    rx = shm.Ring(path, 64, 3, create=True)
    tx = shm.Ring(path, rx.capacity, rx.slots, create=False)
    rx.unlink()
    yield rx, tx
    rx.close()
    tx.close()


def test_ring_keeps_order_across_wrap_around_and_reports_full(pair):
    rx, tx = pair
    for k in range(20):  # 20 messages through 3 slots, in bursts of up to 3
        burst = k % 3 + 1
        sent = [torch.full((2, 4), float(10 * k + j)) for j in range(burst)]
        for t in sent:
            assert not tx.full()
            tx.put(t)
        assert tx.full() == (burst == 3)
        for t in sent:
            assert rx.ready()
            torch.testing.assert_close(rx.take((2, 4), torch.float32), t, rtol=0, atol=0)
        assert not rx.ready()


def test_ring_refuses_a_message_of_another_size_or_dtype(pair):
    rx, tx = pair
    tx.put(torch.ones(3, 4))
    with pytest.raises(RuntimeError, match="has 48 bytes, the receiver expected 32"):
        rx.take((2, 4), torch.float32)


def test_ring_carries_empty_messages(pair):
    rx, tx = pair
    tx.put(torch.empty(0, 4))
    assert rx.take((0, 4), torch.float32).shape == (0, 4)


def test_sends_never_block_a_full_ring_queues_them_in_order(pair):
    rx, tx = pair
    stats = CommStats()
    sender = shm.LocalChannels({}, {1: tx}, stats, timeout_s=5)
    receiver = shm.LocalChannels({0: rx}, {}, CommStats(), timeout_s=5)
    for k in range(10):  # 3 fit, 7 wait in the sender's queue
        sender.send(torch.full((4,), float(k)), 1)
    assert sender.pending() and stats.payload_sent == 10 * 16
    got = []
    for _ in range(10):
        sender.progress()  # what every wait of the sender does
        got.append(float(receiver.recv(0, (4,), torch.float32, torch.device("cpu"))[0]))
    assert got == [float(k) for k in range(10)] and not sender.pending()
    assert sender.carries(1, tx.capacity, sending=True) and not sender.carries(1, tx.capacity + 1, sending=True)
    assert not sender.carries(0, 4, sending=False)  # no ring from rank 0 into the sender


def test_waits_time_out_naming_the_peer(pair):
    rx, tx = pair
    receiver = shm.LocalChannels({7: rx}, {}, CommStats(), timeout_s=0.2, spin_s=0.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"receive from rank 7 timed out after 0 s \(shared memory\)"):
        receiver.recv(7, (4,), torch.float32, torch.device("cpu"))
    assert time.monotonic() - t0 < 2
    sender = shm.LocalChannels({}, {3: tx}, CommStats(), timeout_s=0.2)
    for _ in range(4):  # one more than the slots: the receiver never reads
        sender.send(torch.zeros(4), 3)
    with pytest.raises(TimeoutError, match="sends to rank 3 timed out"):
        sender.flush()


def test_a_wait_notices_a_peer_that_exited(pair):
    rx, _ = pair
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    receiver = shm.LocalChannels({5: rx}, {}, CommStats(), timeout_s=30, spin_s=0.0, pids={5: gone.pid})
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"receive from rank 5: rank 5 \(pid {gone.pid}\) has exited"):
        receiver.recv(5, (4,), torch.float32, torch.device("cpu"))
    assert time.monotonic() - t0 < 5  # not the 30 s timeout


# ---- real processes ----
def _ping_pong(rank, world_size, transport, slots):
    """Rank 0 streams 40 messages (more than the ring holds) while rank 1 answers each with its sum."""
    peer = 1 - rank
    local = shm.connect({peer: 4 * 8}, [peer], CommStats(), 60.0, transport, slots=slots)
    if local is None:
        return None
    cpu = torch.device("cpu")
    if rank == 0:
        for k in range(40):
            local.send(torch.arange(8, dtype=torch.float32) + k, peer)
        sums = [float(local.recv(peer, (1,), torch.float32, cpu)) for _ in range(40)]
        local.flush()
    else:
        sums = []
        for _ in range(40):
            x = local.recv(peer, (8,), torch.float32, cpu)
            local.send(x.sum().reshape(1), peer)
        local.flush()
    leftovers = [n for n in os.listdir("/dev/shm") if n.startswith(f"mimo-{os.getpid()}-")]
    local.close()
    return {"sums": sums, "leftovers": leftovers}


@needs_shm
def test_processes_exchange_through_shared_memory_with_queued_sends():
    for transport, slots in (("auto", 2), ("shm", 16)):
        r0, r1 = spawn(_ping_pong, 2, (transport, slots), timeout_s=120, collective_timeout_s=60)
        assert r0["sums"] == [float(sum(range(8)) + 8 * k) for k in range(40)]
        assert r0["leftovers"] == r1["leftovers"] == []  # unlinked once both sides mapped them


def test_gloo_transport_makes_no_channels():
    assert spawn(_ping_pong, 2, ("gloo", 2), timeout_s=120, collective_timeout_s=60) == [None, None]


def test_generated_bursts_through_one_ring_stay_in_order(pair):
    """Many interleavings of sends and receives (a bounded exhaustive walk over burst patterns)."""
    rx, tx = pair
    sender = shm.LocalChannels({}, {1: tx}, CommStats(), timeout_s=5)
    receiver = shm.LocalChannels({0: rx}, {}, CommStats(), timeout_s=5)
    sent = received = 0
    for pattern in itertools.product((1, 2, 5), repeat=4):
        for burst in pattern:
            for _ in range(burst):
                sender.send(torch.tensor([float(sent)]), 1)
                sent += 1
            while received < sent - 2:  # the receiver lags two behind
                sender.progress()
                assert float(receiver.recv(0, (1,), torch.float32, torch.device("cpu"))) == received
                received += 1
    assert sent == 81 * sum((1, 2, 5)) * 4 // 3
