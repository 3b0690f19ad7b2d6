"""Bridge relays in the lowering (comm/lowering.py, schedule/lower.py): the leader's receive, then its
forwarding sends in the group right after it; deadlock-free under NCCL's rules (schedule/nccl.py) on
generated topologies with host maps, and one cross-host copy per receiving group."""

import random
from collections import Counter

import pytest

from mimo_runtime.comm.lowering import lower_plan, step_programs
from mimo_runtime.comm.routes import owned
from mimo_runtime.plan import ModuleLayout, ModulePlan, Plan
from mimo_runtime.schedule import build_schedule, build_steps
from mimo_runtime.schedule.lower import SEND, Group
from mimo_runtime.schedule.nccl import check_nccl


def _plan(encoders, lang, micro_batch=4) -> Plan:
    """encoders: [(tp, dp, pp, frozen)]; lang: (tp, cp, dp, pp, sp); each module on its own ranks."""
    modules, offset = {}, 0
    for i, (tp, dp, pp, frozen) in enumerate(encoders):
        modules[f"enc{i}"] = ModulePlan(f"enc{i}", "encoder", offset, tp * dp * pp, tp, 1, dp, pp, frozen)
        offset += tp * dp * pp
    tp, cp, dp, pp, sp = lang
    modules["language"] = ModulePlan("language", "language", offset, tp * cp * dp * pp, tp, cp, dp, pp,
                                     sequence_parallel=sp)
    world = offset + tp * cp * dp * pp
    edges = tuple((n, "language") for n in modules if n != "language")
    return Plan(world, ModuleLayout.NON_COLOCATED, modules, edges, 8 * micro_batch * dp, micro_batch, None)


def _random_case(rng: random.Random):
    lang_dp = rng.choice([1, 2, 4])
    tp = rng.choice([1, 2, 4])
    lang = (tp, rng.choice([1, 2]), lang_dp, rng.randint(1, 4), tp > 1 and rng.random() < 0.3)
    encoders = [(rng.choice([1, 2, 4]), rng.choice([d for d in (1, 2, 4, 8) if d % lang_dp == 0 or lang_dp % d == 0]),
                 rng.randint(1, 3), rng.random() < 0.3) for _ in range(rng.randint(1, 3))]
    plan = _plan(encoders, lang)
    world = plan.world_size
    hosts = rng.choice([
        [m.name for m in plan.modules.values() for _ in m.ranks],  # a host per module
        [f"h{r % 3}" for r in range(world)],  # interleaved
        [f"h{r // rng.randint(1, 4)}" for r in range(world)],  # blocks of neighbours
        [f"h{rng.randint(0, 2)}" for r in range(world)],  # anywhere
    ])
    return plan, hosts


def _relay_groups(programs):
    return sum(isinstance(it, Group) and it.relay for p in programs.values() for it in p)


def test_generated_topologies_with_host_maps_lower_relays_deadlock_free():
    rng = random.Random(17)
    relays = 0
    for case in range(50):
        plan, hosts = _random_case(rng)
        m = rng.choice([1, 2, 3, 8, 17])
        kind = rng.choice(["1f1b", "1f1b", "gpipe", "forward"])
        frozen_all = tuple(n for n in plan.encoders if rng.random() < 0.2)
        options = {"frozen_ahead": rng.random() < 0.5}
        programs = lower_plan(build_schedule(plan, m, kind, frozen_all, **options), plan, hosts)
        check_nccl(programs)
        relays += _relay_groups(programs)
        if kind != "forward":
            lead = rng.randint(0, m)
            check_nccl(lower_plan(build_steps(plan, m, 2, kind, frozen_all, lead, **options), plan, hosts))
            for name, pieces in step_programs(plan, m, kind, frozen_all, lead=lead, hosts=hosts, **options).items():
                check_nccl(pieces)
    assert relays > 300  # the generated cases do relay, forward and backward


def test_a_relay_group_follows_the_leaders_receive_and_stays_on_its_host():
    plan = _plan([(2, 1, 1, False)], (2, 1, 1, 1, False))  # encoder tp2 on ranks 0-1, language tp2 on 2-3
    hosts = ["a", "a", "b", "b"]
    programs = lower_plan(build_schedule(plan, 2), plan, hosts)
    check_nccl(programs)
    for leader, other in ((2, 3), (0, 1)):  # forward rows into language, gradients into the encoder
        prog = [it for it in programs[leader] if isinstance(it, Group)]
        for k, g in enumerate(prog):
            if g.relay:
                assert g.ops == [(SEND, other)]
                assert ("recv", 0 if leader == 2 else 2) in prog[k - 1].ops and not prog[k - 1].relay
        assert sum(g.relay for g in prog) == 2  # one per microbatch
        assert all(op == ("recv", leader) for it in programs[other] if isinstance(it, Group) for op in it.ops)
    # without host keys every route is direct: no relay group
    assert _relay_groups(lower_plan(build_schedule(plan, 2), plan)) == 0


@pytest.mark.parametrize("enc,lang", [((1, 2), (2, 1, 1)), ((2, 1), (1, 1, 2)), ((1, 4), (2, 1, 2)),
                                      ((2, 2), (4, 1, 1)), ((2, 1), (2, 2, 1)), ((1, 2), (4, 1, 2))])
def test_lowered_cross_host_sends_are_one_per_receiving_group_and_sender_replica(enc, lang):
    """Encoder on one host, language model on another: per microbatch, the lowered programs send each
    block once per receiving group over the slow link (forward: a language replica's TP ranks per
    slot; backward: an encoder replica's TP ranks) and relay it inside the group; direct routes would
    send it once per receiving rank."""
    (etp, edp), (ltp, lcp, ldp) = enc, lang
    plan = _plan([(etp, edp, 1, False)], (ltp, lcp, ldp, 1, False))
    e, l_ = plan.modules["enc0"], plan.language
    hosts = ["e"] * e.size + ["l"] * l_.size
    m = 3
    g = plan.micro_batch * ldp

    def overlaps(a: ModulePlan, b: ModulePlan, d: int) -> int:  # replicas of a holding samples of b's replica d
        want = set(owned(b, d, g))
        return sum(bool(want & set(owned(a, q, g))) for q in range(a.dp))

    forward_blocks = sum(overlaps(e, l_, d) for d in range(ldp)) * lcp  # per (replica, slot) group
    backward_blocks = sum(overlaps(l_, e, d) * lcp for d in range(edp))  # per encoder replica, each slot
    for with_hosts, per_group in ((True, 1), (False, 0)):
        programs = lower_plan(build_schedule(plan, m), plan, hosts if with_hosts else None)
        check_nccl(programs)
        crossing, relayed = Counter(), Counter()
        for rank, prog in programs.items():
            for it in prog:
                if isinstance(it, Group):
                    for kind, peer in it.ops:
                        if kind == SEND and hosts[peer] != hosts[rank]:
                            crossing[(hosts[rank], hosts[peer])] += 1
                        elif kind == SEND:
                            assert it.relay
                            relayed[hosts[rank]] += 1
        if per_group:
            assert crossing == {("e", "l"): m * forward_blocks, ("l", "e"): m * backward_blocks}
            assert relayed == {k: v for k, v in {"l": m * forward_blocks * (ltp - 1),
                                                 "e": m * backward_blocks * (etp - 1)}.items() if v}
        else:  # direct: once per receiving rank
            assert crossing == {("e", "l"): m * forward_blocks * ltp, ("l", "e"): m * backward_blocks * etp}
            assert not relayed
