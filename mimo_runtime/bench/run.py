"""`mimo-run bench`: every benchmark in one session, one JSON object out.

Process launches are the expensive part on this machine, so the 2-rank chain session runs every
chain measurement in one launch, the frozen-encoder pair runs in a second one and the bridge in a
4-rank third. Timings that compare two things interleave them; see analysis.py for each ratio.
"""

import os
import platform
import time
from dataclasses import replace
from typing import Callable, Dict, Optional

from mimo_runtime.bench.stats import load_average

GOALS = {"vs_torch_pipelining": (">=", 1.3), "vs_torch_interleaved_1f1b": (">=", 1.3),
         "vs_torch_zero_bubble": (">=", 1.3), "makespan_ratio": ("<=", 1.15), "overhead_per_action_ms": ("<", 1.0),
         "bridge_bytes_ratio": ("==", 1.0), "plan_16k_s": ("<", 1.0), "simulate_p64_m1024_s": ("<", 2.0),
         "frozen_encoder_speedup": (">", 1.0)}
SECTIONS = ("pipeline", "frozen", "bridge", "scale", "balance")


def _met(op: str, value: Optional[float], goal: float) -> Optional[bool]:
    if value is None:
        return None
    return {">=": value >= goal, "<=": value <= goal, "<": value < goal, ">": value > goal,
            "==": abs(value - goal) < 1e-9}[op]


def run_all(quick: bool = False, sections=SECTIONS, log: Callable[[str], None] = lambda s: None) -> Dict:
    from mimo_runtime.bench import bridge_bytes, frozen, scale
    from mimo_runtime.bench.analysis import pipeline_summary
    from mimo_runtime.bench.pipeline_rank import PipelineBench, pipeline_rank
    from mimo_runtime.launch.spawn import spawn

    start, load0 = time.perf_counter(), load_average()
    out: Dict = {}
    details: Dict = {}
    if "pipeline" in sections:
        bench = PipelineBench(reps=8, tiny_reps=10, bubble_reps=2, bubble_microbatches=(1, 4, 16)) if quick \
            else PipelineBench()
        log(f"chain: ours vs torch Schedule1F1B, H={list(bench.sizes)}, and vs ScheduleInterleaved1F1B / "
            f"ScheduleInterleavedZeroBubble at V=2, {bench.reps} interleaved repetitions each")
        summary = pipeline_summary(bench, spawn(pipeline_rank, 2, (bench,), timeout_s=900))
        main = summary["compare"][0]
        out.update(vs_torch_pipelining=main["throughput_ratio"], makespan_ratio=main["makespan_ratio"],
                   overhead_per_action_ms=summary["tiny"]["overhead_per_action_ms"],
                   vs_torch_interleaved_1f1b=summary["schedules"]["interleaved_1f1b"]["throughput_ratio"],
                   vs_torch_zero_bubble=summary["schedules"]["zero_bubble"]["throughput_ratio"],
                   schedule_bubble={k: {n: v[n] for n in ("measured_bubble", "simulated_bubble", "unit_cost_bubble")}
                           for k, v in summary["schedules"].items()})
        details["pipeline"] = summary
    if "frozen" in sections:
        fb = replace(frozen.FrozenBench(), reps=4) if quick else frozen.FrozenBench()
        log(f"frozen encoder leading the language across steps, {fb.reps} interleaved repetitions")
        fz = frozen.summarize(fb, spawn(frozen.frozen_rank, 2, (fb,), timeout_s=900))
        out.update(frozen_encoder_speedup=fz["frozen_encoder_speedup"],
                   frozen_encoder_speedup_simulated=fz["frozen_encoder_speedup_simulated"])
        details["frozen"] = fz
    if "bridge" in sections:
        log("bridge bytes on fan-in and fan-out (4 ranks)")
        br = bridge_bytes.summarize(spawn(bridge_bytes.bridge_rank, 4, (), timeout_s=600))
        out["bridge_bytes_ratio"] = br["bridge_bytes_ratio"]
        details["bridge"] = br
    if "scale" in sections:
        log("planning 16,384 ranks; simulating p=64, m=1,024")
        plan, sim = scale.plan_16k(), scale.simulate_p64_m1024()
        out.update(plan_16k_s=plan["plan_16k_s"], simulate_p64_m1024_s=sim["simulate_p64_m1024_s"])
        details["scale"] = {**plan, **sim, **scale.autoplan_16k()}
    if "balance" in sections:
        from mimo_runtime.bench.balance import balance_load, balance_step_time

        log("data.balance: max/mean load per replica and microbatch on a skewed image-count distribution")
        bal = balance_load()
        out.update(balance_images_max_over_mean_after=round(bal["balance_images_max_over_mean"]["after"], 3),
                   balance_images_max_over_mean_before=round(bal["balance_images_max_over_mean"]["before"], 3),
                   balance_language_max_over_mean_after=round(bal["balance_language_max_over_mean"]["after"], 3),
                   balance_language_max_over_mean_before=round(bal["balance_language_max_over_mean"]["before"], 3))
        log("data.balance: step time balanced vs unbalanced, padded and packed (4 ranks, a tiny HF LLaVA)")
        steps = balance_step_time(reps=3 if quick else 8)
        out.update(balance_step_time_ratio_padded=steps["padded"]["balance_step_time_ratio"],
                   balance_step_time_ratio_packed=steps["packed"]["balance_step_time_ratio"])
        details["balance"] = {**bal, "step_time": steps}
    out["goals"] = {k: {"goal": f"{op} {g:g}", "value": out.get(k), "met": _met(op, out.get(k), g)}
                    for k, (op, g) in GOALS.items() if k in out}
    out["details"] = details
    out["machine"] = {"cpus": os.cpu_count(), "load_average_start": load0, "load_average_end": load_average(),
                      "python": platform.python_version(), "torch": _torch_version(), "quick": quick}
    out["took_s"] = round(time.perf_counter() - start, 1)
    return out


def _torch_version() -> str:
    import torch

    return torch.__version__
