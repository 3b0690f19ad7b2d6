"""Raw per-rank timings of the chain session -> the ratios `mimo-run bench` reports.

- vs torch: median step time of torch's Schedule1F1B / ours (throughput ratio), and the spread of
  the per-repetition ratios (each repetition ran both back to back);
- makespan ratio: our median step time / the simulator's makespan for our own lists, with costs
  from the same run (median F and B per stage, reduce and optimizer step from the trace, one-way
  message latency from a ping-pong of an activation-sized tensor);
- overhead per action: with tiny tensors, (step time - the compute-only makespan) / actions per rank;
- bubble vs microbatches: measured idle share of ranks x step time, next to (p-1)/(m+p-1);
- schedules: ours vs torch's ScheduleInterleaved1F1B / ScheduleInterleavedZeroBubble at V = 2 (throughput
  ratio), and for 1F1B, interleaved 1F1B and zero bubble the measured bubble next to the simulated one
  (measured costs) and the unit-cost one.
"""

from dataclasses import replace
from typing import Dict, List

from mimo_runtime.bench.chain import LANG, ChainConfig, chain_plan
from mimo_runtime.bench.pipeline_rank import SCHEDULES
from mimo_runtime.bench.stats import median, ratio_spread, spread, step_spans
from mimo_runtime.schedule import B, F, OPT_STEP, REDUCE_GRADS, W, Costs, build_schedule, simulate


def measured_costs(ranks: List[dict], latency: float = 0.0) -> Costs:
    """Median per-action compute times of each stage (rank r is stage r), as simulator costs."""
    def per_stage(kind: str) -> Dict[tuple, float]:
        return {(LANG, r): median(d["actions"][kind]) if d["actions"].get(kind) else 0.0 for r, d in enumerate(ranks)}

    return Costs(forward=per_stage(F), backward=per_stage(B), weight=per_stage(W), reduce_grads=per_stage(REDUCE_GRADS),
                 opt_step=per_stage(OPT_STEP), latency=latency)


def simulated(cfg: ChainConfig, costs: Costs, slack: int = 0):
    return simulate(build_schedule(chain_plan(cfg), cfg.microbatches, cfg.schedule, slack=slack), costs)


def measured_bubble(cfg: ChainConfig, ranks: List[dict]) -> float:
    """Median over repetitions of 1 - (busy time of both ranks) / (ranks x step time)."""
    spans = step_spans([r["ours"] for r in ranks])
    busy = [sum(b) for b in zip(*[r["busy"] for r in ranks])]
    return round(median([1 - b / (cfg.stages * s) for b, s in zip(busy, spans)]), 4)


def schedule_summary(cfg: ChainConfig, ranks: List[dict], latency: float) -> dict:
    """Ours vs torch's schedule of the same kind, and the bubble measured, simulated and with unit costs."""
    ours = step_spans([r["ours"] for r in ranks])
    theirs = step_spans([r["theirs"] for r in ranks])
    return {
        "schedule": cfg.schedule, "vpp": cfg.vpp, "hidden": cfg.hidden, "microbatches": cfg.microbatches,
        "throughput_ratio": round(median(theirs) / median(ours), 4), "paired_ratio": ratio_spread(theirs, ours),
        "ours_step_s": spread(ours), "torch_step_s": spread(theirs),
        "measured_bubble": measured_bubble(cfg, ranks),
        "simulated_bubble": round(simulated(cfg, measured_costs(ranks, latency)).bubble_fraction, 4),
        "unit_cost_bubble": round(simulated(cfg, Costs()).bubble_fraction, 4),
        "median_action_s": {k: round(median(v), 6) for k, v in ranks[0]["actions"].items()},
        "same_loss": _same(ranks[-1]["ours_loss"], ranks[-1]["theirs_loss"]),
    }


def compare_summary(cfg: ChainConfig, ranks: List[dict], latency: float) -> dict:
    ours = step_spans([r["ours"] for r in ranks])
    theirs = step_spans([r["theirs"] for r in ranks])
    samples = cfg.microbatches * cfg.micro_batch
    sim = simulated(cfg, measured_costs(ranks, latency))
    sim_compute = simulated(cfg, measured_costs(ranks))
    return {
        "hidden": cfg.hidden,
        "throughput_ratio": round(median(theirs) / median(ours), 4),  # ours / theirs in samples per second
        "paired_ratio": ratio_spread(theirs, ours),
        "ours_step_s": spread(ours), "torch_step_s": spread(theirs),
        "ours_samples_per_s": round(samples / median(ours), 2),
        "torch_samples_per_s": round(samples / median(theirs), 2),
        "cpu_ratio": _cpu_ratio(ranks),
        "makespan_ratio": round(median(ours) / sim.makespan, 4),
        "makespan_ratio_compute_only": round(median(ours) / sim_compute.makespan, 4),
        "torch_over_ideal": round(median(theirs) / sim_compute.makespan, 4),
        "simulated_makespan_s": round(sim.makespan, 6), "compute_only_makespan_s": round(sim_compute.makespan, 6),
        "one_way_latency_s": round(latency, 6),
        "median_action_s": {k: round(median(v), 6) for k, v in ranks[0]["actions"].items()},
        "same_loss": _same(ranks[-1]["ours_loss"], ranks[-1]["theirs_loss"]),
    } | _variant(ranks, "theirs_keep_grads", ours, "torch_keep_grads", flip=True) | _variant(ranks, "ours_slack", theirs, "slack")


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(1.0, abs(a))


def _cpu_ratio(ranks: List[dict]):
    """torch's CPU seconds per step / ours, both ranks summed: the runtime's work, which load does not scale."""
    if "ours_cpu" not in ranks[0]:
        return None
    ours = [sum(c) for c in zip(*[r["ours_cpu"] for r in ranks])]
    theirs = [sum(c) for c in zip(*[r["theirs_cpu"] for r in ranks])]
    return round(median(theirs) / median(ours), 4)


def _variant(ranks: List[dict], name: str, other: List[float], label: str, flip: bool = False) -> dict:
    """A third runner of the session against ours or torch's, when the session timed it:
    ours with extra warm-up forwards ("ours_slack" vs torch's), or torch's zeroing gradients in
    place ("theirs_keep_grads" vs ours; `flip`: the ratio is still torch's time / ours)."""
    if name not in ranks[0]:
        return {}
    spans = step_spans([r[name] for r in ranks])
    theirs, ours = (spans, other) if flip else (other, spans)
    return {f"{label}_throughput_ratio": round(median(theirs) / median(ours), 4), f"{name}_step_s": spread(spans),
            f"{label}_paired_ratio": ratio_spread(theirs, ours)}


def overhead_summary(cfg: ChainConfig, ranks: List[dict]) -> dict:
    ours = step_spans([r["ours"] for r in ranks])
    theirs = step_spans([r["theirs"] for r in ranks])
    compute = simulated(cfg, measured_costs(ranks)).makespan
    actions = max(r["actions_per_step"] for r in ranks)
    return {
        "hidden": cfg.hidden, "layers": cfg.layers, "actions_per_rank": actions,
        "overhead_per_action_ms": round((median(ours) - compute) / actions * 1e3, 4),
        "torch_overhead_per_action_ms": round((median(theirs) - compute) / actions * 1e3, 4),
        "ours_step_s": spread(ours), "torch_step_s": spread(theirs), "compute_only_makespan_s": round(compute, 6),
    }


def bubble_summary(cfg: ChainConfig, by_m: Dict[int, List[dict]]) -> List[dict]:
    rows = []
    p = cfg.stages
    for m, ranks in sorted(by_m.items()):
        spans = step_spans([r["ours"] for r in ranks])
        busy = [sum(b) for b in zip(*[r["busy"] for r in ranks])]
        measured = [1 - b / (p * s) for b, s in zip(busy, spans)]
        c = replace(cfg, microbatches=m)
        sim = simulated(c, measured_costs(ranks))
        rows.append({"microbatches": m, "measured_bubble": round(median(measured), 4),
                     "simulated_bubble": round(sim.bubble_fraction, 4), "theory": round((p - 1) / (m + p - 1), 4),
                     "step_s": round(median(spans), 6)})
    return rows


def pipeline_summary(bench, results: List[dict]) -> dict:
    """All chain numbers from the per-rank results of `pipeline_rank`."""
    out = {"compare": [], "tiny": None, "bubble": None}
    for hidden in bench.sizes:
        cfg = replace(bench.base, hidden=hidden)
        ranks = [r["compare"][hidden] for r in results]
        latency = median([r["latency"][hidden] for r in results])
        out["compare"].append(compare_summary(cfg, ranks, latency))
    main = replace(bench.base, hidden=bench.sizes[0])
    latency = median([r["latency"][bench.sizes[0]] for r in results])
    out["schedules"] = {"1f1b": schedule_summary(main, [r["compare"][bench.sizes[0]] for r in results], latency)}
    for kind, vpp in SCHEDULES:
        out["schedules"][kind] = schedule_summary(replace(main, vpp=vpp, schedule=kind),
                                                  [r["schedules"][kind] for r in results], latency)
    tiny = replace(bench.base, hidden=bench.tiny_hidden, layers=1)
    out["tiny"] = overhead_summary(tiny, [r["tiny"] for r in results])
    by_m = {m: [r["bubble"][m] for r in results] for m in bench.bubble_microbatches}
    out["bubble"] = bubble_summary(bench.base, by_m)
    return out
