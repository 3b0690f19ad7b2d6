"""Planner: Topology -> Plan (per-rank roles, module rank ranges, edges, layout). Pure Python."""

from mimo_runtime.plan.plan import DIM_NAMES, Coords, ModulePlan, Plan, colocated_plan, make_plan
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY, ModuleLayout, ModuleStageInfo, RankRole

__all__ = ["Plan", "ModulePlan", "Coords", "DIM_NAMES", "make_plan", "colocated_plan", "RankRole",
           "ModuleStageInfo", "ModuleLayout", "MIMO_LANGUAGE_MODULE_KEY"]
