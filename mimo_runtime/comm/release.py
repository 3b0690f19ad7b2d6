"""When a send is known to be complete without waiting for it: the causal release points. Pure.

A gloo send is complete once its receiver took the data, but gloo reports that only through
`Work.wait`, and a timed wait that expires tears down the whole context; an untimed wait before
the receiver posted blocks the sender (what NCCL does, what the asynchronous mode avoids). So the
asynchronous mode would hold every send buffer, and with it every forward output sent, until the
end of the step: memory growing with the number of microbatches.

Causality tells earlier. Messages between two ranks match in posting order. If rank b took our k-th
send in its item h and later (in an item after h, so posted once h had completed) sent us something
that we received in our item j, then after our item j our k-th send to b is complete: waiting for it
returns at once. Both sides' sequences come from the schedule, so every rank computes the same points
(`release_points`); a send no later message proves complete waits for the end of the step as before.

An item is what a rank runs one after another (a program's compute action or p2p group, or an
action of a bare list); its ops are the rank-level sends and receives it posts, `(kind, peer)`.
"""

from bisect import bisect_right
from typing import Dict, List, Optional, Sequence, Tuple

from mimo_runtime.comm.lowering import RankOps
from mimo_runtime.schedule.actions import RECV_KINDS, SEND_KINDS
from mimo_runtime.schedule.lower import SEND, Group, Op, Program

Released = Dict[int, List[Tuple[int, int]]]  # after item j: [(item i, peer)] whose sends to peer are complete


def release_points(items: Dict[int, Sequence[Sequence[Op]]]) -> Dict[int, Released]:
    """rank -> {j: [(i, peer), ...]}: once the rank's item j completed, the sends its item i posted to
    `peer` have been taken by `peer` (the rank may wait for them without blocking)."""
    sent: Dict[Tuple[int, int], List[int]] = {}  # (src, dst) -> src's item of each send, in posting order
    taken: Dict[Tuple[int, int], List[int]] = {}  # (src, dst) -> dst's item of each receive, in posting order
    for rank, seq in items.items():
        for i, ops in enumerate(seq):
            for kind, peer in ops:
                if kind == SEND:
                    sent.setdefault((rank, peer), []).append(i)
                else:
                    taken.setdefault((peer, rank), []).append(i)
    out: Dict[int, Released] = {rank: {} for rank in items}
    for (a, b), ours in sent.items():
        took, back_sent, back_taken = taken.get((a, b), []), sent.get((b, a), []), taken.get((b, a), [])
        proof: Dict[int, Optional[int]] = {}  # item i -> after which of a's items all its sends to b are taken
        for k, i in enumerate(ours):
            later = bisect_right(back_sent, took[k]) if k < len(took) else len(back_taken)
            j = max(back_taken[later], i) if later < len(back_taken) else None  # b's first message after it took ours
            proof[i] = None if j is None or proof.get(i, i) is None else max(j, proof.get(i, i))
        for i, j in proof.items():
            if j is not None:
                out[a].setdefault(j, []).append((i, b))
    return out


def program_items(program: Program) -> List[List[Op]]:
    """A lowered program's items and their ops. A group that a compute action posts itself (the
    colocated exchange) is posted while that action runs: its ops count at that action's item."""
    items: List[List[Op]] = []
    last_action = None
    for item in program:
        items.append([])
        if not isinstance(item, Group):
            last_action = len(items) - 1
        elif item.within is not None and last_action is not None:
            items[last_action] += item.ops
        else:
            items[-1] += item.ops
    return items


def list_items(actions: Sequence, rank: int, ops: RankOps) -> List[List[Op]]:
    """A bare action list's items on `rank`: each send or receive posts its routes' ops, each compute
    action the exchanges it runs inside."""
    out = []
    for a in actions:
        if a.kind in SEND_KINDS or a.kind in RECV_KINDS:
            out.append(list(ops.expand(a, rank)))
        else:
            out.append([op for group in ops.inner(a, rank) for op in group])
    return out


def program_releases(programs: Dict[int, Program]) -> Dict[int, Released]:
    return release_points({rank: program_items(p) for rank, p in programs.items()})


def list_releases(schedule, plan) -> Dict[int, Released]:
    """Release points of a schedule's bare lists, every rank (what the asynchronous executor posts)."""
    ops = RankOps(plan)
    return release_points({r: list_items(schedule.for_rank(plan, r), r, ops) for r in range(plan.world_size)})

