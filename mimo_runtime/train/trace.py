"""The run's timeline: every rank's executed actions on one clock, as a Chrome trace (Perfetto).

The executor records (action, t0, t1) in its own `time.perf_counter`, which has an arbitrary
origin per process. A barrier alone does not align them: a loaded machine may run a rank long
after the barrier released it. So each rank's clock is mapped onto rank 0's by ping-pong
messages (Cristian's algorithm): rank 0 reads t0, a rank answers with its clock reading tr, rank 0
reads t1. The answer's receipt and sending are real happens-before edges, so tr happened inside
[t0, t1] on rank 0's clock: the mapping is off by at most half that round trip, and the file
records this bound per rank ("clock_error_us"). Two spans on different ranks are ordered when
their gap exceeds both ranks' bounds. No wall clock, so no NTP across nodes. At the end rank 0
gathers every rank's events and writes one file.
"""

import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.schedule import parse_action
from mimo_runtime.schedule.actions import COMPUTE_KINDS, RECV_KINDS, SEND_KINDS

Record = Tuple[str, float, float]
SYNC_ROUNDS = 8  # ping-pongs per rank; the one with the shortest round trip gives the tightest bound


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


def best_offset(rounds: Sequence[Tuple[float, float, float]]) -> Tuple[float, float]:
    """(offset, error) from ping-pong rounds (t0, tr, t1): t0 and t1 read on the reference clock before
    sending and after the answer arrived, tr on the other clock in between. For the true offset
    (other clock minus reference), |offset - true| <= error."""
    t0, tr, t1 = min(rounds, key=lambda r: r[2] - r[0])
    return tr - (t0 + t1) / 2, (t1 - t0) / 2


def _clock_offsets(rank: int) -> Tuple[float, float]:
    """This rank's clock minus rank 0's, and the bound on its error (collective; rank 0: (0, 0))."""
    world = dist.get_world_size()
    buf = torch.zeros(2, dtype=torch.float64)
    if rank != 0:
        for _ in range(SYNC_ROUNDS):
            dist.recv(buf, src=0)
            dist.send(torch.tensor([time.perf_counter(), 0.0], dtype=torch.float64), dst=0)
        dist.recv(buf, src=0)
        return float(buf[0]), float(buf[1])
    for peer in range(1, world):
        rounds = []
        for _ in range(SYNC_ROUNDS):
            t0 = time.perf_counter()
            dist.send(buf, dst=peer)
            dist.recv(buf, src=peer)
            rounds.append((t0, float(buf[0]), time.perf_counter()))
        dist.send(torch.tensor(best_offset(rounds), dtype=torch.float64), dst=peer)
    return 0.0, 0.0


class TraceRecorder:
    """Collects this rank's events; `write` gathers them on rank 0. Collective at creation and write."""

    def __init__(self, rank: int):
        self.rank = rank
        dist.barrier()
        offset, self.clock_error = _clock_offsets(rank)
        # every rank's origin is the same instant: rank 0's reading after the sync, mapped to this clock
        origin0 = torch.tensor([time.perf_counter()], dtype=torch.float64)
        dist.broadcast(origin0, src=0)
        self.origin = float(origin0[0]) + offset
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
        dist.gather_object((self.events, self.clock_error), gathered, dst=0)
        if self.rank != 0:
            return
        events = []
        for rank, (rank_events, _) in enumerate(gathered):
            label = f"rank {rank}" + (f": {describe(rank)}" if describe else "")
            events.append({"name": "process_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": label}})
            events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0, "args": {"sort_index": rank}})
            events.extend(rank_events)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms",
                       "otherData": {"clock": "perf_counter per rank, mapped onto rank 0's by ping-pong",
                                     "clock_error_us": [round(err * 1e6, 1) for _, err in gathered],
                                     "world_size": len(gathered)}}, f)
        os.replace(path + ".tmp", path)
