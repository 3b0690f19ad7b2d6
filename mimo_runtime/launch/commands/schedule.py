"""`mimo-run schedule TOPOLOGY [--microbatches M] [--schedule KIND] [--json]`.

Prints each stage node's action list (what the executor will run on its ranks; `c1:F3` is chunk 1's
forward of microbatch 3 under interleaving, `W3` a zero-bubble weight gradient), a unit-cost timeline
and the simulated bubble fraction; `--json` prints the lists, the bubble, deadlock freedom with
asynchronous sends and under NCCL's rules, `kinds` (the action kinds used), `chunks` (virtual stages
per rank of each module) and `p2p`: per rank, the ordered groups of point-to-point ops the executor
posts in one step (schedule/lower.py). Pure Python: no torch is imported.
"""

import json

from mimo_runtime.comm.lowering import lower_plan, rank_chunks
from mimo_runtime.errors import ArgumentError
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
    try:
        schedule = build_schedule(plan, m, args.schedule or plan.topology.train.schedule)
    except ValueError as e:  # e.g. --schedule 1f1b on a topology with vpp > 1
        raise ArgumentError("--schedule", str(e)) from None
    result = validate(schedule)
    if args.json:
        print(json.dumps(_as_json(schedule, plan, result)))
        return 0
    print(format_grid(schedule))
    print()
    print(format_timeline(schedule, result))
    print()
    if schedule.graph.interleaved:
        print("virtual stages per rank: " + ", ".join(f"{n}={v}" for n, v in _chunks(plan).items())
              + " (chunk c of stage p is virtual stage c * pp + p)")
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
        check_nccl(programs, chunks=rank_chunks(schedule, plan))
        nccl = True
    except ScheduleError:
        nccl = False
    return {"schedule": schedule.kind, "microbatches": schedule.num_microbatches,
            "lists": {node_name(n): [str(a) for a in schedule.actions[n]] for n in schedule.nodes},
            "bubble": result.bubble_fraction, "deadlock_free_async": True, "deadlock_free_nccl": nccl,
            "kinds": sorted({a.kind for acts in schedule.actions.values() for a in acts}),
            "chunks": _chunks(plan),
            "p2p": [p2p_json(programs[r]) for r in range(plan.world_size)]}


def _chunks(plan) -> dict:
    """Virtual stages (model chunks) per rank of each module."""
    return {n: m.vpp for n, m in plan.modules.items()}
