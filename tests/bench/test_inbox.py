"""Early receives (comm/inbox.py): posted in the consumer's order per peer, a few ahead, never out of order."""

import torch

from mimo_runtime.comm import CommStats
from mimo_runtime.comm import inbox as inbox_module
from mimo_runtime.comm.inbox import Inbox


class FakeWork:
    def wait(self, timeout):
        return True


class FakeDist:
    def __init__(self):
        self.posted = []  # (src, shape) in posting order

    def irecv(self, buf, src):
        self.posted.append((src, tuple(buf.shape)))
        buf.fill_(len(self.posted))
        return FakeWork()


def make(monkeypatch, depth=2):
    fake = FakeDist()
    monkeypatch.setattr(inbox_module, "dist", fake)
    return Inbox(CommStats(), 5.0, depth), fake


def items(src, kind, n, shape=(2, 3)):
    return [(src, (kind, mb), src, shape) for mb in range(n)]


def test_each_peer_gets_depth_receives_posted_up_front_in_list_order(monkeypatch):
    box, fake = make(monkeypatch)
    box.expect(items(0, "RECV_F", 4) + items(2, "RECV_B", 3), torch.float32, torch.device("cpu"))
    assert fake.posted == [(0, (2, 3))] * 2 + [(2, (2, 3))] * 2


def test_taking_one_posts_the_next_of_the_same_peer_only(monkeypatch):
    box, fake = make(monkeypatch)
    box.expect(items(0, "RECV_F", 4) + items(2, "RECV_B", 3), torch.float32, torch.device("cpu"))
    got = box.take(("RECV_F", 0))
    assert float(got[0, 0]) == 1.0  # the buffer of the first receive posted
    assert fake.posted[-1] == (0, (2, 3)) and len(fake.posted) == 5
    assert box.stats.payload_recv == 2 * 3 * 4


def test_an_item_further_ahead_posts_everything_before_it_first(monkeypatch):
    box, fake = make(monkeypatch, depth=1)
    box.expect(items(0, "RECV_F", 4), torch.float32, torch.device("cpu"))
    got = box.take(("RECV_F", 2))
    assert float(got[0, 0]) == 3.0  # third posted: untagged messages match in posting order
    assert ("RECV_F", 0) in box and ("RECV_F", 2) not in box


def test_idle_once_every_expected_item_is_taken(monkeypatch):
    box, _ = make(monkeypatch)
    box.expect(items(0, "RECV_F", 3), torch.float32, torch.device("cpu"))
    for mb in range(3):
        assert not box.idle()
        box.take(("RECV_F", mb))
    assert box.idle()
