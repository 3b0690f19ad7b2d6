"""Printing schedules: the per-node action grid, and a time-slot picture from a simulation."""

import math
from typing import Dict, Optional

from mimo_runtime.schedule.actions import COMPUTE_KINDS, Node
from mimo_runtime.schedule.graph import Schedule, node_name, rank_span


def format_grid(schedule: Schedule, marks: Optional[Dict[Node, int]] = None,
                window: Optional[int] = None) -> str:
    """One row per stage node: its actions in order (every rank of the node runs the same row).

    `marks` brackets one action per node (where a check stopped); with `window`, each row shows at
    most that many actions around its mark (or from its start), so errors at m=1024 stay readable.
    """
    marks = marks or {}
    names = {n: node_name(n) for n in schedule.nodes}
    spans = {n: rank_span(schedule.graph.ranks[n]) for n in schedule.nodes}
    name_w, span_w = max(map(len, names.values())), max(map(len, spans.values()))
    lines = [f"{schedule.kind} schedule, {schedule.num_microbatches} microbatches, {len(schedule.nodes)} stage "
             f"nodes (one row per node; every rank of a node runs its row"
             f"{'; [x] = where it stops' if marks else ''})"]
    for node in schedule.nodes:
        acts = schedule.actions.get(node, [])
        mark = marks.get(node)
        lo, hi = 0, len(acts)
        if window is not None and len(acts) > window:
            lo = max(0, min((mark or 0) - window // 2, len(acts) - window))
            hi = lo + window
        cells = [f"[{a.cell()}]" if i == mark else a.cell() for i, a in enumerate(acts[lo:hi], lo)]
        if mark is not None and mark >= len(acts):
            cells.append("[end]")
        head = f"#{lo} ... " if lo else ""
        tail = f" ... ({len(acts) - hi} more)" if hi < len(acts) else ""
        lines.append(f"{names[node]:<{name_w}}  {spans[node]:<{span_w}}  {head}{' '.join(cells)}{tail}")
    return "\n".join(lines)


def format_timeline(schedule: Schedule, result, max_slots: int = 240) -> str:
    """F/B/W compute per node (chunk c shown as `c1:F3`) on a time axis in slots of the shortest
    compute; `.` is idle."""
    durations = [e - s for n in schedule.nodes for a, s, e in
                 zip(schedule.actions[n], result.start[n], result.end[n]) if a.kind in COMPUTE_KINDS and e > s]
    if not durations:
        return "(no compute to draw)"
    slot = min(durations)
    slots = math.ceil(result.makespan / slot - 1e-9)
    if slots > max_slots:
        return f"(timeline of {slots} slots not drawn; at most {max_slots})"
    labels = {(n, k): a.cell() for n in schedule.nodes for k, a in enumerate(schedule.actions[n])
              if a.kind in COMPUTE_KINDS}
    cell = max([len(v) for v in labels.values()] + [2])
    width = max(len(node_name(n)) for n in schedule.nodes)
    lines = []
    for node in schedule.nodes:
        row = ["."] * slots
        for k, (a, s, e) in enumerate(zip(schedule.actions[node], result.start[node], result.end[node])):
            if a.kind in COMPUTE_KINDS and e > s:
                first, last = round(s / slot), math.ceil(e / slot - 1e-9)
                for i in range(first, min(last, slots)):
                    row[i] = labels[(node, k)]
        lines.append(f"{node_name(node):<{width}}  " + " ".join(c.ljust(cell) for c in row).rstrip())
    return "\n".join(lines)
