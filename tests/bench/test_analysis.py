"""How the benchmarks turn raw timings into ratios (pure: synthetic timings, no processes)."""

import pytest

from mimo_runtime.bench import bridge_bytes
from mimo_runtime.bench.analysis import compare_summary, measured_costs, overhead_summary, schedule_summary
from mimo_runtime.bench.chain import ChainConfig
from mimo_runtime.bench.run import GOALS, _met
from mimo_runtime.bench.stats import ratio_spread, spread, step_spans
from mimo_runtime.comm.routes import backward_routes, forward_routes

CFG = ChainConfig(hidden=16, microbatches=4)


def rank_data(step_s, theirs_s, f=0.01, b=0.02, loss=1.0, reps=5, offset=0.0):
    starts = [10.0 * i + offset for i in range(reps)]
    return {"ours": [(t, t + step_s) for t in starts], "theirs": [(t + 5, t + 5 + theirs_s) for t in starts],
            "actions": {"F": [f] * 4, "B": [b] * 4, "REDUCE_GRADS": [0.0], "OPT_STEP": [0.0]},
            "ours_loss": loss, "theirs_loss": loss, "actions_per_step": 34, "busy": [4 * (f + b)] * reps}


def test_step_time_spans_the_earliest_start_to_the_latest_end_across_ranks():
    assert step_spans([[(0.0, 1.0), (5.0, 6.0)], [(0.5, 2.0), (5.0, 5.5)]]) == [2.0, 1.0]


def test_throughput_ratio_is_torch_step_time_over_ours():
    s = compare_summary(CFG, [rank_data(0.2, 0.3), rank_data(0.2, 0.3, offset=0.01)], latency=0.0)
    assert s["throughput_ratio"] == pytest.approx(0.31 / 0.21, rel=1e-3)  # rank 1 ends 10 ms later
    assert s["same_loss"]


def test_makespan_ratio_divides_by_the_simulated_1f1b_makespan_of_the_measured_costs():
    # p=2, m=4, F=0.01, B=0.02 per stage: 1F1B makespan = (m + p - 1) * (F + B) = 0.15
    s = compare_summary(CFG, [rank_data(0.3, 0.3), rank_data(0.3, 0.3)], latency=0.0)
    assert s["compute_only_makespan_s"] == pytest.approx(0.15)
    assert s["makespan_ratio"] == pytest.approx(2.0, rel=1e-3)
    with_latency = compare_summary(CFG, [rank_data(0.3, 0.3), rank_data(0.3, 0.3)], latency=0.01)
    assert with_latency["simulated_makespan_s"] > 0.15 and with_latency["makespan_ratio"] < 2.0


def test_overhead_per_action_is_what_the_step_adds_to_compute_per_listed_action():
    s = overhead_summary(CFG, [rank_data(0.15 + 0.034, 0.2), rank_data(0.15 + 0.034, 0.2)])
    assert s["overhead_per_action_ms"] == pytest.approx(1.0, rel=1e-3)  # 34 ms over 34 actions


def test_interleaved_and_zero_bubble_unit_cost_bubbles_are_below_1f1b():
    data = [rank_data(0.2, 0.3), rank_data(0.2, 0.3)]
    bubbles = {kind: schedule_summary(ChainConfig(hidden=16, microbatches=4, vpp=vpp, schedule=kind), data,
                                      latency=0.0)["unit_cost_bubble"]
               for kind, vpp in (("1f1b", 1), ("interleaved_1f1b", 2), ("zero_bubble", 2))}
    assert bubbles["1f1b"] == pytest.approx(1 / 5)  # (p-1)/(m+p-1)
    assert bubbles["interleaved_1f1b"] < bubbles["1f1b"] and bubbles["zero_bubble"] < bubbles["1f1b"]


def test_measured_costs_are_per_stage_medians():
    data = [rank_data(1, 1, f=0.01), rank_data(1, 1, f=0.03)]
    data[0]["actions"]["F"] = [0.01, 0.5, 0.01]
    costs = measured_costs(data)
    assert costs.forward == {("language", 0): 0.01, ("language", 1): 0.03}


def test_spreads_are_medians_with_quartiles_and_paired_ratios():
    s = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["max"] == 100.0 and s["n"] == 5
    assert ratio_spread([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])["median"] == 2.0


@pytest.mark.parametrize("layout", bridge_bytes.LAYOUTS, ids=lambda l: l.name)
def test_bridge_minimum_counts_each_receiving_rank_once_per_direction(layout):
    enc, lang = layout.modules()
    g = layout.global_mb
    rows = {i: bridge_bytes.rows_of(i, 0) for i in range(g)}
    routes = forward_routes(enc, lang, g) + backward_routes(enc, lang, g)
    moved = sum(rows[i] for r in routes for i in range(r.lo, r.hi)) * bridge_bytes.HIDDEN * bridge_bytes.BYTES
    assert bridge_bytes.minimum_bytes(layout, 1) == moved


def test_goals_are_checked_in_the_right_direction():
    def met(key, value):
        op, goal = GOALS[key]
        return _met(op, value, goal)

    assert met("vs_torch_pipelining", 1.31) and not met("vs_torch_pipelining", 1.2)
    assert met("makespan_ratio", 1.1) and not met("makespan_ratio", 1.2)
    assert met("bridge_bytes_ratio", 1.0) and not met("bridge_bytes_ratio", 1.5)
    assert met("overhead_per_action_ms", 0.4) and not met("overhead_per_action_ms", 1.0)
    assert met("plan_16k_s", None) is None
