"""Central property: every supported topology shape trains exactly like the colocated model."""

import json

import pytest

from mimo_runtime.comm.lowering import step_programs
from mimo_runtime.plan import make_plan
from mimo_runtime.schedule import parse_action
from mimo_runtime.schedule.lower import Group

from tests.train.equivalence import STEPS, assert_matches_reference, reference, run, topology

ENC = {"kind": "encoder"}
LANG = {"kind": "language"}

SHAPES = {
    "encoder_then_llm_on_2_ranks": ("tiny-vlm", {"images": {**ENC, "ranks": 1}, "language": {**LANG, "ranks": 1}}),
    "fan_in_encoder_dp2_to_llm_tp2": ("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                                                  "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}}),
    "fan_out_encoder_tp2_to_llm_dp2": ("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"tp": 2}},
                                                   "language": {**LANG, "ranks": 2, "parallel": {"dp": 2}}}),
    "images_and_audio_to_llm": ("tiny-avlm", {"images": {**ENC, "ranks": 1}, "audio": {**ENC, "ranks": 1},
                                              "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}}),
    "llm_pp2": ("tiny-vlm", {"images": {**ENC, "ranks": 1}, "language": {**LANG, "ranks": 2, "parallel": {"pp": 2}}}),
    "encoder_pp2": ("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"pp": 2}},
                                 "language": {**LANG, "ranks": 1}}),
    "frozen_encoder": ("tiny-vlm", {"images": {**ENC, "ranks": 1, "frozen": True}, "language": {**LANG, "ranks": 1}}),
    "language_only_pp2": ("tiny-lm", {"language": {**LANG, "ranks": 2, "parallel": {"pp": 2}}}),
    "mixed_8_ranks": ("tiny-vlm", {"images": {**ENC, "ranks": 4, "parallel": {"tp": 2, "dp": 2}},
                                   "language": {**LANG, "ranks": 4, "parallel": {"tp": 2, "pp": 2}}}),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_heterogeneous_matches_colocated(shape):
    model, modules = SHAPES[shape]
    topo = topology(model, modules)
    assert_matches_reference(topo, run(topo), reference(topo))


def test_colocated_encoder_dp2_language_tp2_on_2_ranks_matches_reference():
    """placement: colocated with different layouts: encoder rows are redistributed in-process."""
    topo = topology("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                                 "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}}, placement="colocated")
    results = run(topo)
    assert_matches_reference(topo, results, reference(topo))
    # each forward's and backward's exchange is exactly one lowered group (comm/exchange.py), strict here
    plan = make_plan(topo)
    programs = step_programs(plan, plan.num_microbatches, "1f1b")["plain"]
    for rank, res in enumerate(results):
        assert res.comm["groups"] == STEPS * sum(isinstance(it, Group) for it in programs[rank]) > 0, rank


def test_forward_only_evaluation_gives_training_forward_loss():
    model, modules = SHAPES["llm_pp2"]
    topo = topology(model, modules)
    results = run(topo, eval_forward=True, steps=2)
    train_losses = [m["loss"] for m in results[0].metrics]
    assert results[0].eval_losses == pytest.approx(train_losses, rel=1e-6)


@pytest.mark.parametrize("shape,transport", [("language_only_pp2", "auto"), ("llm_pp2", "shm")])
def test_language_stages_over_shared_memory_match_colocated(shape, transport, monkeypatch):
    """The language model's stage-to-stage hidden states go through shared-memory rings (comm/shm.py):
    by default when every rank has a core (2 ranks here), forced on 3 ranks sharing 2 cores."""
    monkeypatch.setenv("MIMO_P2P_TRANSPORT", transport)
    model, modules = SHAPES[shape]
    topo = topology(model, modules)
    results = run(topo)
    assert_matches_reference(topo, results, reference(topo))
    lang = make_plan(topo).language.ranks
    assert [results[r].comm["shm_channels"] for r in lang] == [2, 2]  # a ring each way on both stages
    assert results[lang[-1]].comm["header_sent"] == 0  # it sends only to stage 0: known shapes, no headers


LEADING = {  # encoder stages that train nothing compute the next step's first forward before the barrier
    "encoder_frozen_entirely": ("tiny-vlm", {"images": {**ENC, "ranks": 1, "freeze": ["*"]},
                                             "language": {**LANG, "ranks": 1}}, [0]),
    "encoder_pp2_frozen_entirely_to_llm_pp2": ("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"pp": 2},
                                                                       "freeze": ["*"]},
                                                            "language": {**LANG, "ranks": 2, "parallel": {"pp": 2}}},
                                               [0, 1]),
    "frozen_encoder_pp2_trainable_projection": ("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"pp": 2},
                                                                        "frozen": True},
                                                             "language": {**LANG, "ranks": 1}}, [0]),
}


@pytest.mark.parametrize("shape", list(LEADING))
def test_encoders_leading_across_steps_match_colocated(shape, tmp_path):
    model, modules, leading = LEADING[shape]
    topo = topology(model, modules)
    trace = tmp_path / "trace.json"
    assert_matches_reference(topo, run(topo, trace_path=str(trace)), reference(topo))
    m = topo.train.global_batch // topo.train.micro_batch
    ahead = set()
    for e in json.loads(trace.read_text())["traceEvents"]:
        a = parse_action(e["args"]["action"]) if e.get("ph") == "X" else None
        if a is not None and a.kind == "F" and a.mb >= m:
            ahead.add((e["pid"], e["args"]["step"], a.mb - m))
    # steps 0 and 1 (of 3) compute the first forward of steps 1 and 2; the last step computes none
    assert ahead == {(rank, step, 0) for rank in leading for step in (0, 1)}

