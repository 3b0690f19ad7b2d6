"""Planning cost at scale: a 16,384-rank images + audio + language topology.

Prints JSON with the seconds taken by make_plan, by a role lookup on every rank, and by to_json
(the `mimo-run plan --json` payload). Run: .venv/bin/python benchmarks/plan_scale.py
"""

import json
import time

from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict

TOPOLOGY = {
    "name": "avlm-16k",
    "model": "tiny-avlm",
    "modules": {
        "images": {"kind": "encoder", "parallel": {"tp": 2, "dp": 2048}},  # ranks 0-4095
        "audio": {"kind": "encoder", "parallel": {"tp": 1, "dp": 4096}},  # ranks 4096-8191
        "language": {"kind": "language", "parallel": {"tp": 4, "cp": 2, "dp": 512, "pp": 2}},  # 8192-16383
    },
    "train": {"global_batch": 4096, "micro_batch": 8},
}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    topo, load_s = _timed(lambda: topology_from_dict(TOPOLOGY, "benchmarks/plan_scale.py"))
    plan, plan_s = _timed(lambda: make_plan(topo))
    _, roles_s = _timed(lambda: [plan.role(r) for r in range(plan.world_size)])
    payload, json_s = _timed(plan.to_json)
    print(json.dumps({
        "world_size": plan.world_size,
        "modules": len(plan.modules),
        "load_topology_s": round(load_s, 6),
        "make_plan_s": round(plan_s, 6),
        "role_every_rank_s": round(roles_s, 6),
        "to_json_s": round(json_s, 6),
        "json_ranks": len(payload["ranks"]),
    }))


if __name__ == "__main__":
    main()
