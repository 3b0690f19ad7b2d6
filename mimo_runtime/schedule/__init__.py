"""Schedules as data: per-stage-node action lists for 1F1B / GPipe / forward-only / interleaved 1F1B /
zero bubble over the module DAG,
a validator that proves them deadlock-free, and a simulator (makespan, bubble, in-flight activations).

Pure Python: no torch, no torch.distributed, no model imports.
"""

from mimo_runtime.schedule.actions import (
    B, F, W, KINDS, NO_MICROBATCH, OPT_STEP, RECV_B, RECV_F, REDUCE_GRADS, SEND_B, SEND_F, Action, Node, parse_action)
from mimo_runtime.schedule.errors import ScheduleError
from mimo_runtime.schedule.generate import SCHEDULE_KINDS, build_schedule
from mimo_runtime.schedule.graph import COLOCATED, Schedule, StageGraph, node_name, stage_graph
from mimo_runtime.schedule.grid import format_grid, format_timeline
from mimo_runtime.schedule.simulate import Costs, SimResult, rendezvous_deadlock, simulate
from mimo_runtime.schedule.steps import STEP_LISTS, build_steps, step_lists
from mimo_runtime.schedule.validate import validate

__all__ = ["Action", "Node", "parse_action", "F", "B", "W", "SEND_F", "RECV_F", "SEND_B", "RECV_B", "REDUCE_GRADS",
           "OPT_STEP", "KINDS", "NO_MICROBATCH", "COLOCATED", "Schedule", "StageGraph", "stage_graph", "node_name",
           "SCHEDULE_KINDS", "build_schedule", "build_steps", "step_lists", "STEP_LISTS", "format_grid", "format_timeline", "Costs", "SimResult", "simulate",
           "rendezvous_deadlock", "validate", "ScheduleError"]
