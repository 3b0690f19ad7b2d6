"""`ScheduleError`: a broken action list, named by node, ranks and action, with the grid printed."""

from typing import Dict, Optional

from mimo_runtime.schedule.actions import Action, Node
from mimo_runtime.schedule.graph import Schedule, node_name, rank_span
from mimo_runtime.schedule.grid import format_grid

GRID_WINDOW = 16  # actions shown per row in an error's grid


class ScheduleError(Exception):
    def __init__(self, message: str, node: Optional[Node] = None, index: Optional[int] = None,
                 action: Optional[Action] = None):
        super().__init__(message)
        self.node, self.index, self.action = node, index, action


def error_at(schedule: Schedule, node: Node, index: int, problem: str,
             marks: Optional[Dict[Node, int]] = None) -> ScheduleError:
    """An error about action `index` of `node` (index == len(list) means its end)."""
    acts = schedule.actions.get(node, [])
    action = acts[index] if 0 <= index < len(acts) else None
    where = f"action #{index} {action}" if action is not None else f"the end of its list ({len(acts)} actions)"
    head = f"node {node_name(node)} ({rank_span(schedule.graph.ranks[node])}), {where}: {problem}"
    grid = format_grid(schedule, marks if marks is not None else {node: index}, GRID_WINDOW)
    return ScheduleError(f"{head}\n{grid}", node, index, action)
