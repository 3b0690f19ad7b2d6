"""`mimo-run plan TOPOLOGY [--json | --resolved] [--world-size N] [--set KEY=VALUE]`, or `--auto` (plan_auto.py)."""

import json

from mimo_runtime.errors import ArgumentError
from mimo_runtime.launch.cli import add_overrides, positive_int
from mimo_runtime.launch.commands import plan_auto
from mimo_runtime.launch.commands.check import missing_files, missing_modules, stop
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import Problems, load_topology, resolved_yaml


def add_arguments(p) -> None:
    p.add_argument("topology", nargs="?", help="topology YAML file (omit with --auto)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (see docs/topology.md)")
    p.add_argument("--resolved", action="store_true", help="print the topology with every default filled in (YAML)")
    p.add_argument("--world-size", type=positive_int("--world-size"), help="check against this many ranks")
    add_overrides(p)
    plan_auto.add_arguments(p)


def run(args) -> int:
    if args.auto:
        return plan_auto.run(args)
    if args.topology is None:
        raise ArgumentError("topology", "a topology file is required (or --auto --world-size N --model PRESET)")
    topology = load_topology(args.topology, args.overrides)
    plan = make_plan(topology, args.world_size)
    problems = Problems(topology.source)  # `mimo-run check` also builds the model and reads the data
    missing_files(topology, problems)
    missing_modules(topology, problems)
    stop(problems, args.overrides)
    if args.resolved:
        print(resolved_yaml(topology), end="")
        return 0
    if args.json:
        print(json.dumps(plan.to_json(), indent=1))
        return 0
    print(format_table(plan))
    return 0


def format_table(plan) -> str:
    edges = ", ".join(f"{a}->{b}" for a, b in plan.edges) or "none"
    lines = [f"world_size={plan.world_size} layout={plan.layout.value} "
             f"microbatches={plan.num_microbatches} edges={edges}",
             f"{'module':<10} {'kind':<9} {'ranks':<11} {'tp':>3} {'cp':>3} {'dp':>3} {'pp':>3}"]
    for m in plan.modules.values():
        span = f"{m.rank_offset}-{m.rank_offset + m.size - 1}" if m.size > 1 else str(m.rank_offset)
        lines.append(f"{m.name:<10} {m.kind:<9} {span:<11} {m.tp:>3} {m.cp:>3} {m.dp:>3} {m.pp:>3}")
    lines += ["", f"{'rank':>5}  {'module':<10} {'stage':<12} {'tp':>3} {'cp':>3} {'dp':>3} {'pp':>3}"]
    for entry in plan.rank_entries():
        for name, c in entry["modules"].items():
            stage = "first+last" if c["is_first_stage"] and c["is_last_stage"] else (
                "first" if c["is_first_stage"] else "last" if c["is_last_stage"] else "middle")
            lines.append(f"{entry['rank']:>5}  {name:<10} {stage:<12} {c['tp_rank']:>3} {c['cp_rank']:>3} "
                         f"{c['dp_rank']:>3} {c['pp_rank']:>3}")
    return "\n".join(lines)
