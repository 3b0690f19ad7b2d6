"""Bridge routing between two modules, as pure data (no processes): who sends which samples to whom.

A global microbatch holds G samples; replica d of a module with data-parallel size D owns samples
[d*G/D, (d+1)*G/D). Encoder outputs (rows, H) are replicated over the encoder's TP ranks after the
projection. A language replica's sequence is cut into slots (plan/sequence.py): one per CP rank,
and with sequence parallelism one per (CP, TP) rank; a language rank needs the rows of its own
samples *at its slot's positions* (the bridge picks those rows, routes name the samples). So:
- forward: each receiving rank gets each of its samples' rows of its slot exactly once, from one
  sender (senders are spread over the encoder's TP ranks);
- backward: each slot's input gradient is complete on every language rank holding that slot (all
  TP ranks without SP), and each encoder rank needs the gradient of its own rows, so it receives
  each sample's rows once per slot, from one rank holding the slot.

Across hosts (`hosts`: a host key per global rank) the slow link carries each block once per
receiving host: when no rank holding a block is on a receiver's host, only the first rank of the
receiving group on that host (the leader) gets it from a sender, and the group's other ranks on
that host get it from the leader (a relay route, `via` = the original sender). A receiving group
is the ranks needing the same block: a language replica's TP ranks sharing a slot (forward), an
encoder replica's TP ranks (backward). Blocks whose receiver shares a host with a holder stay direct.
When the two modules share ranks (colocated placement) every route stays direct (`bridge_routes`).
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from mimo_runtime.plan import ModulePlan


@dataclass(frozen=True)
class Route:
    src: int  # global rank sending
    dst: int  # global rank receiving
    lo: int  # first sample (index within the global microbatch)
    hi: int  # one past the last sample
    via: int = -1  # a relay: the rank that sent the block to `src` (whose slot it carries); -1: direct

    @property
    def origin(self) -> int:
        """The rank whose data the block is (it defines the block's slot)."""
        return self.src if self.via < 0 else self.via


def relayed(routes: Sequence[Route], incoming: Route) -> List[Route]:
    """The relay routes passing on the block `incoming` brought to its receiver, in route order."""
    return [x for x in routes if x.src == incoming.dst and x.via == incoming.origin and x.lo == incoming.lo]


def bridge_routes(enc: ModulePlan, lang: ModulePlan, global_mb: int,
                  hosts: Optional[Sequence[str]] = None) -> Tuple[List[Route], List[Route]]:
    """(forward, backward) routes of one bridge, as the bridge and the lowering both use them.

    Colocated modules keep every route direct: a leader would also send its own rows to the ranks it
    relays to, and the rows it relays would depend on the exchange it is part of."""
    if set(enc.ranks) & set(lang.ranks):
        hosts = None
    return forward_routes(enc, lang, global_mb, hosts), backward_routes(enc, lang, global_mb, hosts)


def owned(m: ModulePlan, dp_rank: int, global_mb: int) -> range:
    per = global_mb // m.dp
    return range(dp_rank * per, (dp_rank + 1) * per)


def _overlaps(src: ModulePlan, dst: ModulePlan, dst_dp: int, global_mb: int):
    want = owned(dst, dst_dp, global_mb)
    for q in range(src.dp):
        have = owned(src, q, global_mb)
        lo, hi = max(want.start, have.start), min(want.stop, have.stop)
        if lo < hi:
            yield q, lo, hi


def _deliver(dst: int, group: Sequence[int], holders: Sequence[int], pick: Callable[[int, Sequence[int]], int],
             lo: int, hi: int, hosts: Optional[Sequence[str]]) -> Route:
    """The route bringing block (lo, hi) to `dst`, one of `group` (the ranks needing that same block).

    `holders` are the ranks that have it; `pick(receiver, candidates)` chooses a receiver's sender."""
    if hosts is None:
        return Route(pick(dst, holders), dst, lo, hi)
    near = [s for s in holders if hosts[s] == hosts[dst]]
    if near:
        return Route(pick(dst, near), dst, lo, hi)
    leader = next(r for r in group if hosts[r] == hosts[dst])
    if leader == dst:
        return Route(pick(dst, holders), dst, lo, hi)
    return Route(leader, dst, lo, hi, via=pick(leader, holders))


def forward_routes(enc: ModulePlan, lang: ModulePlan, global_mb: int,
                   hosts: Optional[Sequence[str]] = None) -> List[Route]:
    """Encoder last stage -> language stage 0, in (dst, sample) order."""

    def pick(receiver: int, holders: Sequence[int]) -> int:  # a replica's receivers spread over encoder TP
        c = lang.coords(receiver)
        return holders[(c.tp + lang.tp * c.cp) % len(holders)]

    routes = []
    for dst in lang.stage_ranks(0):
        c = lang.coords(dst)
        group = [r for r in lang.stage_ranks(0) if lang.coords(r).dp == c.dp and lang.slot(r) == lang.slot(dst)]
        for q, lo, hi in _overlaps(enc, lang, c.dp, global_mb):
            holders = [enc.rank(tp=t, dp=q, pp=enc.pp - 1) for t in range(enc.tp)]
            routes.append(_deliver(dst, group, holders, pick, lo, hi, hosts))
    return routes


def backward_routes(enc: ModulePlan, lang: ModulePlan, global_mb: int,
                    hosts: Optional[Sequence[str]] = None) -> List[Route]:
    """Language stage 0 -> encoder last stage (gradients of the rows), in (dst, sample, slot) order."""

    def pick(receiver: int, holders: Sequence[int]) -> int:
        return holders[enc.coords(receiver).tp % len(holders)]

    routes = []
    for dst in enc.stage_ranks(enc.pp - 1):
        c = enc.coords(dst)
        group = [enc.rank(tp=t, dp=c.dp, pp=enc.pp - 1) for t in range(enc.tp)]
        for r, lo, hi in _overlaps(lang, enc, c.dp, global_mb):
            for slot in range(lang.cp * lang.sequence_shards):
                cp, sp = divmod(slot, lang.sequence_shards)
                holders = [lang.rank(tp=sp, cp=cp, dp=r, pp=0)] if lang.sequence_parallel else \
                    [lang.rank(tp=t, cp=cp, dp=r, pp=0) for t in range(lang.tp)]
                routes.append(_deliver(dst, group, holders, pick, lo, hi, hosts))
    return routes
