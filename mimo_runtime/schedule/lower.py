"""Lowering: node action lists -> each rank's ordered program of compute actions and p2p groups.

Under NCCL a rank's point-to-point groups on one communicator run one after another, and a group
completes only when each of its ops has met its matching op on the peer (schedule/nccl.py checks
exactly that). The action lists are proven deadlock-free for asynchronous sends; this lowering turns
that proof into an NCCL-safe order. It simulates the lists (unit costs) and gives every message the
time its receive completed there. Each rank posts its ops sorted by that time, both ends of a message
at the same time, and the ops one rank has at one time form one group (a lone op is a group of one).
Every group at time t then needs only groups at time t of other ranks, and every rank gets there once
all earlier groups completed, so the sequential order of the simulation is an NCCL execution: no
deadlock, for every list `simulate` accepts (1F1B, GPipe, forward-only, frozen-encoder lead,
multi-step lists). A send is thereby posted no earlier than its receiver takes it (megatron pairs a
send with the receive that follows it for the same reason), which is also when a deferred output
may be freed.

What one node-level action means per rank (the bridge's routes, TP replication, the colocated
exchange inside a forward) comes from `expand`, so this file stays pure: comm/lowering.py supplies
the routes. Ops inside a group are ordered by message, then route, on both sides, which keeps the
per-(sender, receiver) posting order the same at both ends.

Relays (`relay`: a rank passing a received block on to ranks of its host, comm/routes.py) cannot
share the receive's group: a send's data must be there when it is posted. They form a group of
their own right after it (`Group.relay`), while their receivers' receives stay in the groups at
the message's time. That group needs only the receive's group, which needs only groups at the same
time (none of which waits for the relay's receivers, which are stage peers of the leader and
exchange nothing else with it); so the argument above still holds, one relay group later.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mimo_runtime.schedule.actions import OPT_STEP, RECV_KINDS, SEND_KINDS, Action
from mimo_runtime.schedule.graph import Schedule
from mimo_runtime.schedule.simulate import Costs, simulate

SEND, RECV = "send", "recv"
Op = Tuple[str, int]  # ("send" | "recv", peer global rank)
# (action, rank) -> the rank-level ops of one node-level send or receive, in route order
Expand = Callable[[Action, int], Sequence[Op]]
# (action, rank) -> groups a compute action posts itself, in order (the colocated exchange); may be None
Inner = Optional[Callable[[Action, int], Sequence[Sequence[Op]]]]
# (receive action, rank) -> the sends relaying what it received, in order; may be None
Relay = Optional[Expand]


@dataclass(frozen=True)
class Group:
    """One batch of p2p ops: the messages (node-level actions) it carries and each one's ops."""

    messages: Tuple[Tuple[Action, Tuple[Op, ...]], ...]
    within: Optional[Action] = None  # set when the compute action `within` posts the group itself
    relay: bool = False  # the sends passing on what the messages' receives (the group before) brought

    @property
    def ops(self) -> List[Op]:
        return [op for _, ops in self.messages for op in ops]

    def __str__(self) -> str:
        return "[" + ", ".join(f"{k}{'>' if k == SEND else '<'}{p}" for k, p in self.ops) + "]"


Item = Union[Action, Group]
Program = List[Item]  # one rank's: compute and step actions, and the groups between them

LOWERING_COSTS = Costs(opt_step=1.0)  # a non-zero barrier separates the groups of consecutive steps


def lower(schedule: Schedule, ranks: Dict[int, object], expand: Expand, inner: Inner = None,
          relay: Relay = None) -> Dict[int, Program]:
    """Each rank's program; `ranks` maps every global rank to its stage node (`Schedule.node_of`)."""
    sim = simulate(schedule, LOWERING_COSTS)
    when = _receive_times(schedule, sim)
    programs: Dict[int, Program] = {}
    for rank, node in ranks.items():
        keyed = []
        for k, a in enumerate(schedule.actions[node]):
            if a.kind in SEND_KINDS or a.kind in RECV_KINDS:
                ops = tuple(expand(a, rank))
                if ops:
                    t = when[_message(a, node)]
                    keyed.append(((t, 0, _message(a, node)), (a, ops)))
            else:
                start = sim.end[node][k] - LOWERING_COSTS.opt_step if a.kind == OPT_STEP else sim.start[node][k]
                keyed.append(((start, 1, k), a))
        keyed.sort(key=lambda x: x[0])
        programs[rank] = _assemble(keyed, rank, inner, relay)
    return programs


def _assemble(keyed, rank: int, inner: Inner, relay: Relay) -> Program:
    out: Program = []
    batch: List[Tuple[Action, Tuple[Op, ...]]] = []
    at = None

    def close() -> None:
        out.append(Group(tuple(batch)))
        relays = tuple((a, ops) for a, ops in ((a, tuple(relay(a, rank))) for a, _ in batch) if ops) \
            if relay is not None else ()
        if relays:
            out.append(Group(relays, relay=True))

    for (t, cls, _), item in keyed:
        if batch and (cls or t != at):
            close()
            batch = []
        if cls:
            out.append(item)
            for ops in (inner(item, rank) if inner is not None else ()):
                if ops:
                    out.append(Group(((item, tuple(ops)),), within=item))
        else:
            batch.append(item)
            at = t
    if batch:
        close()
    return out


def _message(a: Action, node) -> tuple:
    """(direction, mb, sender node, its chunk, receiver node, its chunk): the same key at both ends."""
    if a.kind in SEND_KINDS:
        return a.kind[-1], a.mb, node, a.chunk, a.peer, a.peer_chunk
    return a.kind[-1], a.mb, a.peer, a.peer_chunk, node, a.chunk


def _receive_times(schedule: Schedule, sim) -> Dict[tuple, float]:
    """Message -> the simulated time its receive completed (the rendezvous both ends post at)."""
    out = {}
    for node in schedule.nodes:
        for k, a in enumerate(schedule.actions[node]):
            if a.kind in RECV_KINDS:
                out[_message(a, node)] = sim.end[node][k]
    return out


def posted_in_list_order(schedule: Schedule, ranks: Dict[int, object], expand: Expand) -> Dict[int, Program]:
    """Every op a group of one, in action-list order: how the executor posted before the lowering
    (the negative control: the 1F1B lists deadlock this way under NCCL's blocking sends)."""
    programs = {}
    for rank, node in ranks.items():
        out: Program = []
        for a in schedule.actions[node]:
            if a.kind in SEND_KINDS or a.kind in RECV_KINDS:
                out += [Group(((a, (op,)),)) for op in expand(a, rank)]
            else:
                out.append(a)
        programs[rank] = out
    return programs


def cut_steps(program: Program) -> List[Program]:
    """A multi-step program cut after each OPT_STEP (one piece per optimizer step)."""
    out: List[Program] = [[]]
    for item in program:
        out[-1].append(item)
        if isinstance(item, Action) and item.kind == OPT_STEP:
            out.append([])
    return out[:-1] if not out[-1] else out


def p2p_json(program: Program) -> List[List[List[Union[str, int]]]]:
    """One rank's groups as `[["send"|"recv", peer], ...]` lists (what `mimo-run schedule --json` prints)."""
    return [[[kind, peer] for kind, peer in item.ops] for item in program if isinstance(item, Group)]
