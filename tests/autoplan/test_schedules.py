"""The auto-planner's schedule choice: 1f1b, zero_bubble, interleaved_1f1b / zero_bubble at vpp 2 and 4,
the fastest that fits memory on the best shapes, with its predicted gain over 1f1b."""

import pytest

from mimo_runtime.autoplan import Hardware, Problem, auto_plan, evaluate, schedules, topology_dict, topology_yaml
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import PRESETS, topology_from_dict

SLOW_COMPUTE = Hardware(flops_per_s=1e8)  # compute-bound: pipeline bubbles, not links, set the step time
PP4 = (("language", (1, 1, 1, 4)),)


def problem(memory=80.0, hw=SLOW_COMPUTE):
    return Problem(PRESETS["tiny-lm-8"], 4, 32, 2, memory, hw)


def test_a_compute_bound_pipeline_gets_interleaved_zero_bubble_and_its_gain():
    p = problem()
    base = evaluate(p, PP4)
    best = schedules(p, base)
    options = [evaluate(p, PP4, "zero_bubble")] + [evaluate(p, PP4, kind, (("language", v),))
                                                   for v in (2,) for kind in ("interleaved_1f1b", "zero_bubble")]
    assert best.step_s == min(o.step_s for o in options) < base.step_s
    assert (best.schedule, best.vpp) == ("zero_bubble", (("language", 2),))  # 8 layers: vpp 4 needs 16
    assert best.gain == pytest.approx(base.step_s / best.step_s) and best.gain > 1.1
    assert best.bubble < options[1].bubble < base.bubble  # interleaving and the W split each cut it
    topo = topology_from_dict(topology_dict(p, best), "auto.yaml")
    assert topo.train.schedule == "zero_bubble" and make_plan(topo).modules["language"].vpp == 2
    assert "# Schedule zero_bubble (vpp language=2): predicted" in topology_yaml(p, best)


def test_memory_excludes_the_schedules_that_keep_more_alive():
    base = evaluate(problem(), PP4)
    interleaved = evaluate(problem(), PP4, "interleaved_1f1b", (("language", 2),))
    assert interleaved.peak_gib > base.peak_gib  # more chunk forwards alive than 1F1B's warm-up
    tight = problem(memory=base.peak_gib)
    best = schedules(tight, evaluate(tight, PP4))
    assert best.fits and best.vpp == () and best.schedule == "zero_bubble" and best.gain > 1.0  # ZB-H1's memory


def test_latency_bound_links_keep_1f1b_shapes_and_report_the_gain():
    result = auto_plan(problem(hw=Hardware()))
    assert result.best.gain >= 1.0
    assert result.best.schedule in ("1f1b", "zero_bubble", "interleaved_1f1b")


def test_the_memory_model_counts_interleavings_extra_chunk_forwards():
    from mimo_runtime.autoplan.memory import rank_memory

    def topo(schedule, vpp):
        return make_plan(topology_from_dict({"model": "tiny-lm-8", "modules": {"language": {
            "kind": "language", "parallel": {"pp": 4, "vpp": vpp}}}, "train": {
            "global_batch": 16, "micro_batch": 2, "schedule": schedule}}, "t.yaml"))

    plain, zb = rank_memory(topo("1f1b", 1), PRESETS["tiny-lm-8"]), rank_memory(topo("zero_bubble", 1), PRESETS["tiny-lm-8"])
    inter = rank_memory(topo("interleaved_1f1b", 2), PRESETS["tiny-lm-8"])
    assert [zb[r].activations for r in range(4)] == pytest.approx([plain[r].activations for r in range(4)])
    # rank 0: 11 chunk forwards of half a stage each (megatron's warm-up + 1) against 1F1B's 4 stages
    assert inter[0].activations == pytest.approx(plain[0].activations * 5.5 / 4)
