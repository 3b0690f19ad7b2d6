"""The run's timeline: every rank's executed actions on one clock, as a Chrome trace (Perfetto).

The executor records (action, t0, t1) in its own `time.perf_counter`, which has an arbitrary
origin per process. Each rank takes its origin right after a world barrier, so all ranks count
from (nearly) the same instant; barriers release every rank within a network round trip, which
on one machine is far below an action's length, and unlike wall clocks it needs no NTP across
nodes. At the end rank 0 gathers every rank's events and writes one file.
"""

import json
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch.distributed as dist

from mimo_runtime.schedule import parse_action
from mimo_runtime.schedule.actions import COMPUTE_KINDS, RECV_KINDS, SEND_KINDS

Record = Tuple[str, float, float]


def category(kind: str) -> str:
    if kind in COMPUTE_KINDS:
        return "compute"
    if kind in SEND_KINDS or kind in RECV_KINDS:
        return "comm"
    return "step"  # gradient reduction and optimizer step


def module_compute_seconds(records: List[Record]) -> Dict[str, float]:
    """{module: seconds of forward + backward} in `records` ('*' = a colocated rank's every module)."""
    out: Dict[str, float] = {}
    for text, t0, t1 in records:
        a = parse_action(text)
        if a.kind in COMPUTE_KINDS:
            out[a.module] = out.get(a.module, 0.0) + (t1 - t0)
    return out


class TraceRecorder:
    """Collects this rank's events; `write` gathers them on rank 0. Collective at creation and write."""

    def __init__(self, rank: int):
        self.rank = rank
        dist.barrier()
        self.origin = time.perf_counter()
        self.events: List[Dict] = []

    def add(self, records: List[Record], step: int, phase: str) -> None:
        for text, t0, t1 in records:
            a = parse_action(text)
            self.events.append({"name": a.body(), "cat": f"{phase},{category(a.kind)}", "ph": "X",
                                "ts": round((t0 - self.origin) * 1e6, 1), "dur": round((t1 - t0) * 1e6, 1),
                                "pid": self.rank, "tid": 0,
                                "args": {"action": text, "step": step, "phase": phase, "kind": a.kind,
                                         "module": a.module}})

    def write(self, path: str, describe: Optional[Callable[[int], str]] = None) -> None:
        gathered = [None] * dist.get_world_size() if self.rank == 0 else None
        dist.gather_object(self.events, gathered, dst=0)
        if self.rank != 0:
            return
        events = []
        for rank, rank_events in enumerate(gathered):
            label = f"rank {rank}" + (f": {describe(rank)}" if describe else "")
            events.append({"name": "process_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": label}})
            events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0, "args": {"sort_index": rank}})
            events.extend(rank_events)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms",
                       "otherData": {"clock": "perf_counter per rank, zeroed after a world barrier",
                                     "world_size": len(gathered)}}, f)
        os.replace(path + ".tmp", path)
