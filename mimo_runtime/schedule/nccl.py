"""Validator and simulator under NCCL's point-to-point rules, over the lowered programs (lower.py).

Rules (torch's ProcessGroupNCCL, every op through one communicator): a rank runs its groups one after
another in posting order; a group completes when each of its ops has met its matching op on the peer,
where the k-th send from a to b matches the k-th receive on b from a; a send completes only when its
receive is posted, so nothing is buffered. OPT_STEP is a barrier across all ranks. A rank whose group
can never complete is a deadlock, which may span three or more ranks while every pair looks
consistent; the error names each stuck rank, its group and the peers it waits for.

Costs: compute from `Costs` per stage node; a group posted at t completes at the latest over its ops
of (the later of both ends' posting times + the edge's transfer time).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mimo_runtime.schedule.actions import B, F, OPT_STEP, W, Action
from mimo_runtime.schedule.errors import ScheduleError
from mimo_runtime.schedule.lower import SEND, Group, Program
from mimo_runtime.schedule.simulate import Costs

STUCK_SHOWN = 8  # stuck ranks named in a deadlock error


class NcclDeadlock(ScheduleError):
    def __init__(self, message: str, stuck: Dict[int, int]):
        super().__init__(message)
        self.stuck = stuck  # rank -> index of the group it cannot complete


@dataclass(frozen=True)
class NcclResult:
    makespan: float
    bubble_fraction: float  # idle share of ranks x makespan
    groups: Dict[int, int]  # groups per rank


def check_nccl(programs: Dict[int, Program], costs: Optional[Costs] = None,
               node_of: Optional[Dict[int, object]] = None, chunks: Optional[Dict[int, int]] = None) -> NcclResult:
    """Run the programs under NCCL's rules; NcclDeadlock (or ScheduleError for unmatched ops) if they hang.

    `chunks` (rank -> model chunks of its node, default 1) prices each chunk's compute at its share
    of the stage's, as `simulate` does (`Costs.task`)."""
    costs = costs or Costs()
    ranks = sorted(programs)
    split = {r: any(isinstance(it, Action) and it.kind == W for it in programs[r]) for r in ranks}
    shares = chunks or {}
    groups = {r: [it for it in programs[r] if isinstance(it, Group)] for r in ranks}
    match = _matches(groups)
    pc = {r: 0 for r in ranks}
    clock = {r: 0.0 for r in ranks}
    busy = {r: 0.0 for r in ranks}
    posted = {r: -1 for r in ranks}  # highest group index posted (current or completed)
    post_time: Dict[int, List[float]] = {r: [] for r in ranks}
    gi = {r: 0 for r in ranks}  # index of the next group to post
    ready = list(reversed(ranks))
    while True:
        while ready:
            r = ready.pop()
            prog = programs[r]
            while pc[r] < len(prog):
                item = prog[pc[r]]
                if isinstance(item, Action):
                    if item.kind == OPT_STEP:
                        break
                    cost = costs.task(item.kind, _node(node_of, r, item), shares.get(r, 1), split[r])
                    clock[r] += cost
                    busy[r] += cost
                    pc[r] += 1
                    continue
                g = gi[r]
                if posted[r] < g:
                    posted[r] = g
                    post_time[r].append(clock[r])
                    ready.extend(p for p, _ in match[r][g])  # a peer may be waiting for this group
                done = _completion(r, g, item, match, posted, post_time, costs, node_of)
                if done is None:
                    break
                clock[r] = max(clock[r], done)
                gi[r] += 1
                pc[r] += 1
        waiting = [r for r in ranks if pc[r] < len(programs[r])]
        at_barrier = [r for r in waiting if _is_barrier(programs[r][pc[r]])]
        if not waiting or len(at_barrier) < len(ranks):
            break
        go = max(clock[r] for r in at_barrier)
        for r in at_barrier:
            cost = costs.compute(OPT_STEP, _node(node_of, r, programs[r][pc[r]]))
            clock[r] = go + cost
            busy[r] += cost
            pc[r] += 1
            ready.append(r)
    stuck = [r for r in ranks if pc[r] < len(programs[r])]
    if stuck:
        raise _deadlock(programs, groups, match, pc, gi, posted, stuck)
    makespan = max(clock.values(), default=0.0)
    idle = sum(makespan - busy[r] for r in ranks)
    bubble = idle / (len(ranks) * makespan) if makespan > 0 else 0.0
    return NcclResult(makespan, bubble, {r: len(groups[r]) for r in ranks})


def deadlock_free(programs: Dict[int, Program]) -> bool:
    try:
        check_nccl(programs)
    except ScheduleError:
        return False
    return True


def _node(node_of, rank: int, a: Action):
    return node_of[rank] if node_of is not None else a.node


def _is_barrier(item) -> bool:
    return isinstance(item, Action) and item.kind == OPT_STEP


def _matches(groups: Dict[int, List[Group]]) -> Dict[int, List[List[Tuple[int, int]]]]:
    """Per rank, per group, per op: (peer, index of the peer's group holding the matching op)."""
    order: Dict[Tuple[str, int, int], List[int]] = {}  # (kind, rank, peer) -> group index of each op, in order
    for r, gs in groups.items():
        for g, group in enumerate(gs):
            for kind, peer in group.ops:
                order.setdefault((kind, r, peer), []).append(g)
    seen: Dict[Tuple[str, int, int], int] = {}
    out: Dict[int, List[List[Tuple[int, int]]]] = {}
    for r, gs in groups.items():
        out[r] = []
        for g, group in enumerate(gs):
            row = []
            for kind, peer in group.ops:
                mine = (kind, r, peer)
                k = seen.get(mine, 0)
                seen[mine] = k + 1
                theirs = order.get(("recv" if kind == SEND else SEND, peer, r), [])
                if k >= len(theirs):
                    what = "receive on" if kind == SEND else "send from"
                    raise ScheduleError(f"rank {r} group #{g} {group}: {kind} #{k} with rank {peer} has no "
                                        f"matching {what} rank {peer} ({len(theirs)} posted there)")
                row.append((peer, theirs[k]))
            out[r].append(row)
    for (kind, r, peer), gs in order.items():
        other = order.get(("recv" if kind == SEND else SEND, peer, r), [])
        if len(other) < len(gs):
            raise ScheduleError(f"rank {r} posts {len(gs)} {kind}s with rank {peer}, which posts {len(other)} "
                                "matching ops")
    return out


def _completion(r: int, g: int, group: Group, match, posted, post_time, costs: Costs, node_of) -> Optional[float]:
    """When group g of rank r completes, or None while a matching op is not posted yet."""
    done = post_time[r][g]
    transit = _transits(group, costs)
    for (peer, pg), cost in zip(match[r][g], transit):
        if posted[peer] < pg:
            return None
        done = max(done, max(post_time[r][g], post_time[peer][pg]) + cost)
    return done


def _transits(group: Group, costs: Costs) -> List[float]:
    out = []
    for a, ops in group.messages:
        if a.kind in (F, B):  # an exchange inside a forward or backward: latency only
            cost = costs.latency
        elif a.kind[-1] == "F":
            cost = costs.comm(a.node, a.peer) if a.kind.startswith("SEND") else costs.comm(a.peer, a.node)
        else:
            cost = costs.comm(a.peer, a.node) if a.kind.startswith("SEND") else costs.comm(a.node, a.peer)
        out += [cost] * len(ops)
    return out


def _deadlock(programs, groups, match, pc, gi, posted, stuck: List[int]) -> NcclDeadlock:
    lines = [f"deadlock under NCCL's blocking point-to-point rules: {len(stuck)} of {len(programs)} ranks "
             "cannot finish"]
    where: Dict[int, int] = {}
    for r in stuck[:STUCK_SHOWN]:
        item = programs[r][pc[r]]
        if _is_barrier(item):
            lines.append(f"  rank {r} waits at {item} for every rank")
            continue
        g = gi[r]
        where[r] = g
        group = groups[r][g]
        actions = ", ".join(str(a) for a, _ in group.messages)
        missing = [f"rank {p} (posts its group #{pg} only after its group #{gi[p]} "
                   f"{groups[p][gi[p]] if gi[p] < len(groups[p]) else '(none)'})"
                   for p, pg in match[r][g] if posted[p] < pg]
        lines.append(f"  rank {r} group #{g} {group} ({actions}) waits for " + "; ".join(dict.fromkeys(missing)))
    if len(stuck) > STUCK_SHOWN:
        lines.append(f"  ... and {len(stuck) - STUCK_SHOWN} more ranks")
    return NcclDeadlock("\n".join(lines), where)
