"""Planning and simulating at scale: a 16,384-rank topology (benchmarks/plan_scale.py), p=64 x m=1,024."""

import contextlib
import importlib.util
import io
import json
import time
from pathlib import Path
from typing import Dict

from mimo_runtime.plan import ModuleLayout, ModulePlan, Plan
from mimo_runtime.schedule import build_schedule, simulate

PLAN_SCALE = Path(__file__).resolve().parents[2] / "benchmarks" / "plan_scale.py"


def plan_16k(repeats: int = 3) -> Dict:
    """benchmarks/plan_scale.py's measurement, median of repeats.

    Planning = load_topology + make_plan + every rank's role (the per-rank mapping the launcher needs);
    the `--json` payload (to_json) is reported beside it.
    """
    spec = importlib.util.spec_from_file_location("plan_scale", PLAN_SCALE)
    if spec is None or not PLAN_SCALE.exists():
        return {"plan_16k_s": None, "error": f"{PLAN_SCALE} not found (run from a source checkout)"}
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs = []
    for _ in range(repeats):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            module.main()
        runs.append(json.loads(buf.getvalue()))
    def planning(r: Dict) -> float:
        return r["load_topology_s"] + r["make_plan_s"] + r["role_every_rank_s"]

    runs.sort(key=planning)
    mid = runs[len(runs) // 2]
    return {"plan_16k_s": round(planning(mid), 6), "world_size": mid["world_size"],
            "load_topology_s": mid["load_topology_s"], "make_plan_s": mid["make_plan_s"],
            "role_every_rank_s": mid["role_every_rank_s"], "to_json_s": mid["to_json_s"], "runs": len(runs)}


def chain(p: int) -> Plan:
    lang = ModulePlan("language", "language", 0, p, 1, 1, 1, p)
    return Plan(p, ModuleLayout.NON_COLOCATED, {"language": lang}, (), 1024, 1, None)


def simulate_p64_m1024(repeats: int = 3) -> Dict:
    build, sim = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        schedule = build_schedule(chain(64), 1024)
        t1 = time.perf_counter()
        result = simulate(schedule)
        t2 = time.perf_counter()
        build.append(t1 - t0)
        sim.append(t2 - t1)
    actions = sum(len(a) for a in schedule.actions.values())
    return {"simulate_p64_m1024_s": round(sorted(sim)[len(sim) // 2], 6),
            "build_schedule_p64_m1024_s": round(sorted(build)[len(build) // 2], 6), "actions": actions,
            "bubble": round(result.bubble_fraction, 6), "bubble_theory": round(63 / (1024 + 63), 6)}


def autoplan_16k() -> Dict:
    from mimo_runtime.autoplan import Hardware, Problem, search
    from mimo_runtime.topology import PRESETS

    t0 = time.perf_counter()
    best = search(Problem(PRESETS["tiny-avlm"], 16384, 8 * 16384, 2, 80.0, Hardware()))
    return {"autoplan_16k_s": round(time.perf_counter() - t0, 4), "shapes": {n: list(s) for n, s in best.candidate}}
