"""Auto-planner: preset + world size -> the topology with the lowest simulated step time that fits memory.

Pure: imports topology, plan and schedule only (calibration, which needs torch, lives in bench/).
"""

from dataclasses import dataclass
from typing import Optional

from mimo_runtime.autoplan.costs import Hardware, module_dims, stage_cost
from mimo_runtime.autoplan.emit import topology_dict, topology_yaml
from mimo_runtime.autoplan.search import (
    Evaluation, Problem, candidates, even_split, evaluate, is_valid, lower_bound, schedules, search)


@dataclass(frozen=True)
class AutoResult:
    best: Optional[Evaluation]  # None: no candidate fits memory; its schedule and vpp chosen by `schedules`
    naive: Optional[Evaluation]  # None: the even split is not a valid plan


def auto_plan(p: Problem) -> AutoResult:
    naive = even_split(p)
    best = search(p)
    return AutoResult(schedules(p, best) if best is not None else None,
                      evaluate(p, naive) if naive is not None else None)


__all__ = ["AutoResult", "auto_plan", "Problem", "Hardware", "Evaluation", "candidates", "evaluate", "search",
           "even_split", "is_valid", "lower_bound", "schedules", "topology_dict", "topology_yaml", "module_dims", "stage_cost"]
