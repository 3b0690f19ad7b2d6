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
"""

from dataclasses import dataclass
from typing import List

from mimo_runtime.plan import ModulePlan


@dataclass(frozen=True)
class Route:
    src: int  # global rank sending
    dst: int  # global rank receiving
    lo: int  # first sample (index within the global microbatch)
    hi: int  # one past the last sample


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


def forward_routes(enc: ModulePlan, lang: ModulePlan, global_mb: int) -> List[Route]:
    """Encoder last stage -> language stage 0, in (dst, sample) order."""
    routes = []
    for dst in lang.stage_ranks(0):
        c = lang.coords(dst)
        sender_tp = (c.tp + lang.tp * c.cp) % enc.tp
        for q, lo, hi in _overlaps(enc, lang, c.dp, global_mb):
            routes.append(Route(enc.rank(tp=sender_tp, dp=q, pp=enc.pp - 1), dst, lo, hi))
    return routes


def backward_routes(enc: ModulePlan, lang: ModulePlan, global_mb: int) -> List[Route]:
    """Language stage 0 -> encoder last stage (gradients of the rows), in (dst, sample, slot) order."""
    routes = []
    for dst in enc.stage_ranks(enc.pp - 1):
        c = enc.coords(dst)
        for r, lo, hi in _overlaps(lang, enc, c.dp, global_mb):
            for slot in range(lang.cp * lang.sequence_shards):
                cp, sp = divmod(slot, lang.sequence_shards)
                tp = sp if lang.sequence_parallel else c.tp % lang.tp
                routes.append(Route(lang.rank(tp=tp, cp=cp, dp=r, pp=0), dst, lo, hi))
    return routes
