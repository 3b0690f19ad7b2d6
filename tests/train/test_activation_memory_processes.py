"""Activation memory of a pp2 chain on real gloo processes (one spawn): bounded by the pipeline depth.

A forward output's storage is freed once its send was posted (executor._free_output), and every
send is completed as soon as a later message proves its receiver took it (comm/release.py), in both
ways the executor posts: a bare list (the benchmarks) and the lowered p2p groups (the trainer), on
gloo without the strict mode, where sends would otherwise wait for the end of the step.
"""

import os
from functools import lru_cache

import torch

from mimo_runtime.bench.chain import ChainConfig, batch, build_stage, chain_loss
from mimo_runtime.launch.spawn import spawn

H, ROWS, LAYERS, STEPS = 32, 4, 2, 1
MICROBATCHES = (4, 32)
WAYS = ("list", "groups", "groups, nothing released")


def _run(cfg: ChainConfig, rank: int, way: str):
    """(peak per step, numel of each kept output when its backward ran, stage weights after the steps)."""
    from mimo_runtime.bench.runners import OursChain
    from mimo_runtime.comm.lowering import lower_plan
    from mimo_runtime.comm.release import program_releases

    ours = OursChain(cfg, rank, build_stage(cfg, rank), transport="gloo")
    ex = ours.executor
    program, released = None, ours.released
    if way != "list":
        programs = lower_plan(ours.schedule, ours.plan)
        program = programs[rank]
        released = None if way.endswith("nothing released") else program_releases(programs)[rank]
    kept, backward = [], ex._b

    def recording_b(a, st):
        kept.append(st.outputs[(a.chunk, a.mb)].numel())
        backward(a, st)

    ex._b = recording_b
    peaks = []
    for s in range(STEPS):
        ex.run_step(ours.actions, s, program=program, released=released)
        peaks.append(ex.memory.peak)
    return peaks, kept, [p.detach().clone() for p in ours.module.parameters()]


def _worker(rank, world_size):
    os.environ["MIMO_P2P_STRICT"] = "0"  # the CPU default: gloo sends complete when someone waits for them
    out = {}
    for m in MICROBATCHES:
        cfg = ChainConfig(hidden=H, layers=LAYERS, stages=2, microbatches=m, micro_batch=ROWS)
        for way in WAYS:
            out[(m, way)] = _run(cfg, rank, way)
    return out


@lru_cache(maxsize=1)
def _results():
    return spawn(_worker, 2, timeout_s=240, collective_timeout_s=60)


def _peak(way: str, m: int) -> int:
    """activation_peak_mb's rule: the largest step peak of any rank."""
    return max(max(r[(m, way)][0]) for r in _results())


def test_pp2_chain_activation_peak_grows_at_most_1_25x_from_m4_to_m32():
    for way in WAYS[:2]:
        small, large = _peak(way, 4), _peak(way, 32)
        print(f"{way}: activation peak m=4 {small / 2**20:.4f} MiB, m=32 {large / 2**20:.4f} MiB, "
              f"growth {large / small:.2f}x")
        assert large <= 1.25 * small, (way, small, large)


def test_without_release_points_the_peak_grows_with_microbatches():
    """The negative control: the same groups with every send held to the end of the step."""
    way = WAYS[2]
    small, large = _peak(way, 4), _peak(way, 32)
    print(f"{way}: m=4 {small / 2**20:.4f} MiB, m=32 {large / 2**20:.4f} MiB, growth {large / small:.2f}x")
    assert large > 2.5 * small


def test_stage_0_outputs_are_freed_before_their_backward():
    for m in MICROBATCHES:
        for way in WAYS:
            stage0 = _results()[0][(m, way)][1]
            assert stage0 == [1] * (m * STEPS), (m, way)  # sent, then kept as one element for the graph


def _reference(cfg: ChainConfig):
    """Both stages in one process, one SGD step per global batch: the weights the chain must reach."""
    from mimo_runtime.bench.runners import LR

    stages = [build_stage(cfg, s) for s in range(2)]
    opt = torch.optim.SGD([p for s in stages for p in s.parameters()], lr=LR)
    for s in range(STEPS):
        x, y = batch(cfg, s)
        opt.zero_grad()
        chain_loss(stages[1](stages[0](x)), y).backward()  # the mean over all rows = the sum of mb means / m
        opt.step()
    return [[p.detach() for p in st.parameters()] for st in stages]


def test_freed_outputs_train_the_chain_exactly_like_one_process():
    for m in MICROBATCHES:
        want = _reference(ChainConfig(hidden=H, layers=LAYERS, stages=2, microbatches=m, micro_batch=ROWS))
        for way in WAYS:
            for rank, r in enumerate(_results()):
                for got, ref in zip(r[(m, way)][2], want[rank]):
                    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_megatron_stage_outputs_are_freed_and_train_like_colocated(monkeypatch):
    """tiny-vlm with the language model on 2 stages, in the CPU default (gloo, not strict): the encoder's
    output (across the bridge) and language stage 0's hidden states are freed once sent, and the run
    still matches the colocated single process."""
    from mimo_runtime.plan import make_plan
    from tests.train.equivalence import assert_matches_reference, reference, run, topology

    monkeypatch.setenv("MIMO_P2P_STRICT", "0")
    topo = topology("tiny-vlm", {"images": {"kind": "encoder", "ranks": 1},
                                 "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2}}})
    results = run(topo)
    assert_matches_reference(topo, results, reference(topo))
    plan = make_plan(topo)
    m, steps = plan.num_microbatches, len(results[0].metrics)
    encoder, stage0 = plan.modules["images"].ranks[0], plan.language.stage_ranks(0)[0]
    assert results[encoder].comm["outputs_freed"] == m * steps
    assert results[stage0].comm["outputs_freed"] == m * steps
