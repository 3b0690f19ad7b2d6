"""`mimo-run schedule TOPOLOGY [--microbatches M] [--schedule 1f1b|gpipe|forward] [--json]`.

Prints each stage node's action list (what the executor will run on its ranks), a unit-cost timeline
and the simulated bubble fraction; `--json` prints the lists, the bubble, deadlock freedom with
asynchronous sends and under NCCL's rules, and `p2p`: per rank, the ordered groups of point-to-point
ops the executor posts in one step (schedule/lower.py). Pure Python: no torch is imported.
"""

import json

from mimo_runtime.comm.lowering import lower_plan
from mimo_runtime.launch.cli import add_overrides, positive_int
from mimo_runtime.plan import make_plan
from mimo_runtime.schedule import (
    SCHEDULE_KINDS, ScheduleError, build_schedule, format_grid, format_timeline, node_name, rendezvous_deadlock,
    validate)
from mimo_runtime.schedule.lower import p2p_json
from mimo_runtime.schedule.nccl import check_nccl
from mimo_runtime.topology import load_topology


def add_arguments(p) -> None:
    p.add_argument("topology", help="topology YAML file")
    p.add_argument("--microbatches", type=positive_int("--microbatches"), metavar="M",
                   help="microbatches per step (default: global_batch / (micro_batch x language dp))")
    p.add_argument("--schedule", choices=SCHEDULE_KINDS, help="schedule kind (default: train.schedule)")
    add_overrides(p)
    p.add_argument("--json", action="store_true", help="print the lists, bubble, deadlock checks and p2p groups as JSON")


def run(args) -> int:
    plan = make_plan(load_topology(args.topology, args.overrides))
    m = args.microbatches or plan.num_microbatches
    schedule = build_schedule(plan, m, args.schedule or plan.topology.train.schedule)
    result = validate(schedule)
    if args.json:
        print(json.dumps(_as_json(schedule, plan, result)))
        return 0
    print(format_grid(schedule))
    print()
    print(format_timeline(schedule, result))
    print()
    peaks = ", ".join(f"{node_name(n)}={result.peak_inflight[n]}" for n in schedule.nodes)
    print(f"peak in-flight activations: {peaks}")
    strict = "also deadlock-free" if rendezvous_deadlock(schedule) is None else "would deadlock"
    print(f"deadlock-free with asynchronous sends (the executor's semantics); with blocking sends: {strict}")
    print(f"bubble fraction (unit compute costs, free communication): {result.bubble_fraction:.4f} "
          f"(makespan {result.makespan:g})")
    return 0


def _as_json(schedule, plan, result) -> dict:
    programs = lower_plan(schedule, plan)
    try:
        check_nccl(programs)
        nccl = True
    except ScheduleError:
        nccl = False
    return {"schedule": schedule.kind, "microbatches": schedule.num_microbatches,
            "lists": {node_name(n): [str(a) for a in schedule.actions[n]] for n in schedule.nodes},
            "bubble": result.bubble_fraction, "deadlock_free_async": True, "deadlock_free_nccl": nccl,
            "p2p": [p2p_json(programs[r]) for r in range(plan.world_size)]}
