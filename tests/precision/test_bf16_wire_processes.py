"""`precision: bf16` across ranks: stage-to-stage hidden states, the bridge's embedding rows and their
gradients travel as bf16 (train/precision.py wire_dtype). One 4-rank spawn trains two topologies in
fp32 and in bf16, one 2-rank spawn a colocated placement whose layouts differ (its in-forward
exchange) in both: each bf16 run equals the colocated single-process bf16 run within bf16
tolerance, and every rank moved exactly half the payload bytes of the same topology's fp32 run.

Tolerance, measured (3 steps): per-step losses within 1.8e-4 relative, gradients within 1.0e-2
relative in norm (tiny-vlm); the test allows 1e-3 and 3e-2. The fp32 runs of the same topologies
match their reference at 1e-4 (tests/train/test_heterogeneous_equals_colocated.py).
"""

from functools import lru_cache

import torch

from mimo_runtime.launch.spawn import spawn
from tests.precision.rank_fns import train_each
from tests.train.equivalence import run, shard_of, topology

ENC, LANG = {"kind": "encoder"}, {"kind": "language"}
SHAPES = {
    # encoder stages and language stages: stage-to-stage messages on both sides of the bridge, over shm
    "encoder_pp2_to_llm_pp2": ({"images": {**ENC, "ranks": 2, "parallel": {"pp": 2}},
                                "language": {**LANG, "ranks": 2, "parallel": {"pp": 2}}}, "shm"),
    # the bridge fans two encoder replicas into a TP group, over gloo
    "encoder_dp2_to_llm_tp2": ({"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                                "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}}, "gloo"),
}
PRECISIONS = ("fp32", "bf16")
LOSS_RTOL = 1e-3
GRAD_RTOL = 3e-2


def _topo(shape: str, precision: str):
    return topology("tiny-vlm", SHAPES[shape][0], precision=precision)


@lru_cache(maxsize=1)
def _runs():
    cases = [(_topo(s, p), SHAPES[s][1]) for s in SHAPES for p in PRECISIONS]
    per_rank = spawn(train_each, 4, args=(cases,), timeout_s=240, collective_timeout_s=60)
    return {(s, p): [r[i] for r in per_rank] for i, (s, p) in enumerate((s, p) for s in SHAPES for p in PRECISIONS)}


@lru_cache(maxsize=1)
def _colocated_runs():
    """placement: colocated, encoder dp2 and language tp2 on the same 2 ranks: the rows move between
    layouts inside the forward (comm/exchange.py), in fp32 and in bf16, in one 2-rank spawn."""
    topos = [topology("tiny-vlm", SHAPES["encoder_dp2_to_llm_tp2"][0], placement="colocated", precision=p)
             for p in PRECISIONS]
    per_rank = spawn(train_each, 2, args=([(t, "gloo") for t in topos],), timeout_s=240, collective_timeout_s=60)
    return {p: [r[i] for r in per_rank] for i, p in enumerate(PRECISIONS)}


@lru_cache(maxsize=1)
def _reference():
    """The colocated single-process bf16 run: nothing crosses a wire, so nothing is rounded there."""
    return run(_topo("encoder_dp2_to_llm_tp2", "bf16"), colocated=True, nproc=1)[0]


def _assert_close_to_reference(results, ref, label):
    """Losses per step within LOSS_RTOL; each gradient within GRAD_RTOL of the reference's in norm
    (bf16 rounds single elements far more than a tensor as a whole)."""
    got = torch.tensor([m["loss"] for m in results[0].metrics])
    want = torch.tensor([m["loss"] for m in ref.metrics])
    assert torch.allclose(got, want, rtol=LOSS_RTOL, atol=0), (label, got, want)
    worst, seen = 0.0, set()
    for rank, res in enumerate(results):
        for name, (grad, dim, tp_rank, tp_size) in res.grads.items():
            expected, _ = ref.grads[name][0], seen.add(name)
            if expected is None:
                assert grad is None, (label, rank, name)
                continue
            expected = shard_of(expected, dim, tp_rank, tp_size)
            assert grad.shape == expected.shape, (label, rank, name)
            gap = float((grad - expected).norm() / expected.norm().clamp_min(1e-12))
            assert gap <= GRAD_RTOL, (label, rank, name, gap)
            worst = max(worst, gap)
    assert seen == set(ref.grads), (label, sorted(set(ref.grads) - seen)[:5])
    print(f"{label}: losses {got.tolist()} vs {want.tolist()}, largest relative gradient gap {worst:.2e}")


def test_bf16_heterogeneous_runs_equal_the_colocated_bf16_run():
    ref = _reference()
    for shape in SHAPES:
        _assert_close_to_reference(_runs()[(shape, "bf16")], ref, shape)
    _assert_close_to_reference(_colocated_runs()["bf16"], ref, "colocated_encoder_dp2_llm_tp2")


def test_bf16_runs_move_half_the_payload_bytes_of_fp32_runs():
    for shape in SHAPES:
        fp32, bf16 = _runs()[(shape, "fp32")], _runs()[(shape, "bf16")]
        assert all(f.comm["payload_recv"] > 0 for f in fp32), shape  # every rank receives (tp rank 1 sends nothing)
        for rank, (f, b) in enumerate(zip(fp32, bf16)):
            assert 2 * b.comm["payload_sent"] == f.comm["payload_sent"], (shape, rank, f.comm, b.comm)
            assert 2 * b.comm["payload_recv"] == f.comm["payload_recv"], (shape, rank)
            assert b.comm["header_sent"] == f.comm["header_sent"], (shape, rank)  # int64 headers stay as they are
    fp32, bf16 = _colocated_runs()["fp32"], _colocated_runs()["bf16"]
    assert all(f.comm["payload_sent"] > 0 for f in fp32)
    assert [2 * b.comm["payload_sent"] for b in bf16] == [f.comm["payload_sent"] for f in fp32]
    # the language stages' rings (an encoder declares no slot size: its stages use gloo)
    assert [r.comm["shm_channels"] for r in _runs()[("encoder_pp2_to_llm_pp2", "bf16")]] == [0, 0, 2, 2]
