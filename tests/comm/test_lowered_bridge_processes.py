"""What the trainer posts is the lowering (comm/lowering.py), under the strict (NCCL-like) transport:
relays on the receiving host, stage-to-stage messages without shape headers. Each run is compared
with the colocated single-process reference (tests/train/equivalence.py)."""

import pytest

from mimo_runtime.comm.lowering import step_programs
from mimo_runtime.plan import make_plan
from mimo_runtime.schedule.lower import Group

from tests.train.equivalence import STEPS, assert_matches_reference, reference, run, topology

ENC = {"kind": "encoder"}
LANG = {"kind": "language"}


@pytest.fixture(autouse=True)
def strict_p2p(monkeypatch):
    monkeypatch.setenv("MIMO_P2P_STRICT", "1")


def test_relays_on_the_receiving_host_train_like_colocated_with_one_cross_host_copy_per_tp_group(monkeypatch):
    """Encoder (tp2) on host a, language model (tp2) on host b (MIMO_FAKE_HOSTS, comm/shm.py): forward,
    rank 2 (the language group's leader) gets the rows over the slow link and relays them to rank 3;
    backward, rank 0 gets the gradients and relays them to rank 1."""
    monkeypatch.setenv("MIMO_FAKE_HOSTS", "a,a,b,b")
    topo = topology("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"tp": 2}},
                                 "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}})
    results = run(topo)
    assert_matches_reference(topo, results, reference(topo))
    host = "aabb"
    by_hosts = {}
    for rank, res in enumerate(results):
        for dst, n in res.comm["sent_to"].items():
            by_hosts[(host[rank], host[dst])] = by_hosts.get((host[rank], host[dst]), 0) + n
    sent = {rank: res.comm["sent_to"] for rank, res in enumerate(results)}
    # the slow link carries one copy per receiving TP group: each direction exactly what one rank of
    # the receiving group needs (here: everything it receives), the group's other rank gets it relayed
    assert by_hosts[("a", "b")] == results[3].comm["payload_recv"] == sent[0][2] > 0
    assert by_hosts[("b", "a")] == results[1].comm["payload_recv"] == sent[2][0] > 0
    assert sent[2][3] == sent[0][2] and sent[0][1] == sent[2][0]  # the relays, on their hosts
    assert set(sent[0]) == {1, 2} and set(sent[2]) == {0, 3} and not sent[1] and not sent[3]


def test_encoder_and_language_stages_post_exactly_the_lowered_groups_no_shape_headers():
    """An encoder on 2 stages into a language model on 2 stages: every stage-to-stage shape is known
    on both sides (the encoder's from its samples' item counts), so each rank posts exactly its
    program's groups each step, and no header travels."""
    topo = topology("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"pp": 2}},
                                 "language": {**LANG, "ranks": 2, "parallel": {"pp": 2}}})
    results = run(topo)
    assert_matches_reference(topo, results, reference(topo))
    plan = make_plan(topo)
    programs = step_programs(plan, plan.num_microbatches, "1f1b")["plain"]
    for rank, res in enumerate(results):
        groups = sum(isinstance(item, Group) for item in programs[rank])
        assert res.comm["groups"] == STEPS * groups > 0, rank
        assert res.comm["header_sent"] == res.comm["header_recv"] == 0, rank
