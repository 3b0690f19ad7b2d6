"""Bridge bytes on fan-in and fan-out layouts versus the theoretical minimum (CommStats, real Bridge).

Each sample carries a varying number of rows (images per sample differ), tagged with the sample's
index so every receiver also checks it got exactly its own samples. The encoder's ranks are on one
host and the language model's on another (the usual placement of modules on nodes); the traffic is
what the trainer posts: the executor on the lowered 1F1B programs, relays included. Two minimums:
- per rank: forward, every language stage-0 rank needs the rows of its samples once (TP and CP
  ranks each need them); backward, every encoder last-stage rank needs its samples' gradients once;
- across hosts (`bridge_bytes_ratio`): forward, each language replica's rows cross once (its TP
  ranks share them on their host); backward, each encoder replica's gradient rows cross once.
(Context-parallel language layouts split rows by sequence slot; comm's own tests cover those.)
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

from mimo_runtime.comm.routes import owned
from mimo_runtime.plan import ModulePlan

HIDDEN = 64
TOKENS = 4  # rows per item; a sample has 1 to 3 items
BYTES = 4  # float32


@dataclass(frozen=True)
class Layout:
    name: str
    enc: Tuple[int, int]  # (tp, dp)
    lang: Tuple[int, int, int]  # (tp, cp, dp)
    micro_batch: int = 4  # per language replica

    def modules(self) -> Tuple[ModulePlan, ModulePlan]:
        etp, edp = self.enc
        ltp, lcp, ldp = self.lang
        enc = ModulePlan("images", "encoder", 0, etp * edp, etp, 1, edp, 1)
        lang = ModulePlan("language", "language", enc.size, ltp * lcp * ldp, ltp, lcp, ldp, 1)
        return enc, lang

    def hosts(self) -> List[str]:
        enc, lang = self.modules()
        return ["encoder-host"] * enc.size + ["language-host"] * lang.size

    @property
    def world_size(self) -> int:
        return sum(m.size for m in self.modules())

    @property
    def global_mb(self) -> int:
        return self.micro_batch * self.lang[2]


LAYOUTS = (
    Layout("fan-in dp2 -> tp2", enc=(1, 2), lang=(2, 1, 1)),
    Layout("fan-out tp2 -> dp2", enc=(2, 1), lang=(1, 1, 2)),
    Layout("fan-in dp4 -> dp2 (4 -> 2 replicas)", enc=(1, 4), lang=(1, 1, 2), micro_batch=2),
)


def rows_of(sample: int, mb: int) -> int:
    return TOKENS * (1 + (3 * sample + mb) % 3)


def minimum_bytes(layout: Layout, microbatches: int) -> int:
    enc, lang = layout.modules()
    g = layout.global_mb
    total = 0
    for mb in range(microbatches):
        for r in lang.stage_ranks(0):
            total += sum(rows_of(i, mb) for i in owned(lang, lang.coords(r).dp, g)) * HIDDEN * BYTES
        for r in enc.stage_ranks(0):
            total += sum(rows_of(i, mb) for i in owned(enc, enc.coords(r).dp, g)) * HIDDEN * BYTES
    return total


def cross_host_minimum(layout: Layout, microbatches: int) -> int:
    enc, lang = layout.modules()
    g = layout.global_mb
    replicas = sum(sum(rows_of(i, mb) for i in owned(m, d, g)) for mb in range(microbatches)
                   for m in (enc, lang) for d in range(m.dp))
    return replicas * HIDDEN * BYTES


class BridgeCompute:
    """Executor compute for one layout: encoder rows tagged with their sample's index, and a language
    loss whose gradient is minus its input, so each side checks it got exactly its own rows."""

    dtype, device, hidden = None, None, HIDDEN

    def __init__(self, layout: Layout, rank: int):
        import torch

        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.layout, self.rank = layout, rank
        self.enc, self.lang = layout.modules()
        self.wrong = self.checked = 0  # received row blocks (language) or gradients (encoder) not / checked

    def _samples(self, m: ModulePlan) -> List[int]:
        return list(owned(m, m.coords(self.rank).dp, self.layout.global_mb))

    def _rows(self, m: ModulePlan, mb: int):
        import torch

        mine = self._samples(m)
        return torch.cat([torch.full((rows_of(i, mb), HIDDEN), float(i)) for i in mine])

    def encoder_rows(self, enc: str, step: int, mb: int) -> List[int]:
        return [rows_of(i, mb) for i in self._samples(self.enc)]

    def language_rows(self, enc: str, step: int, mb: int) -> List[int]:
        return [rows_of(i, mb) for i in self._samples(self.lang)]

    def forward(self, module: str, step: int, mb: int, inputs, st):
        if module == self.enc.name:
            x = self._rows(self.enc, mb).requires_grad_(True)
            out = x * 1.0

            def check(grad):
                self.wrong += int(not grad.equal(-x.detach()))
                self.checked += 1

            out.register_hook(check)
            return out
        got = inputs[self.enc.name]
        self.wrong += int(not got.detach().equal(self._rows(self.lang, mb)))
        self.checked += 1
        return -0.5 * (got * got).sum()

    def reduce_grads(self, module: str) -> None:
        """Nothing to reduce: the bench counts the bridge's bytes."""


def bridge_rank(rank: int, world_size: int, layouts=LAYOUTS, microbatches: int = 4) -> List[Dict]:
    """One training step over the bridge for each layout that fits `world_size`, posted as the trainer
    does (the executor on the lowered programs, with the hosts' relays); this rank's counts."""
    import torch.distributed as dist

    from mimo_runtime.comm.lowering import lower_plan
    from mimo_runtime.plan import ModuleLayout, Plan
    from mimo_runtime.schedule import build_schedule
    from mimo_runtime.train.executor import Executor

    out = []
    for layout in layouts:
        if layout.world_size != world_size:
            continue
        enc, lang = layout.modules()
        plan = Plan(world_size, ModuleLayout.NON_COLOCATED, {enc.name: enc, lang.name: lang}, ((enc.name, lang.name),),
                    layout.global_mb * microbatches, layout.micro_batch, None)
        hosts = layout.hosts()
        schedule = build_schedule(plan, microbatches)
        compute = BridgeCompute(layout, rank)
        ex = Executor(plan, rank, compute, 60.0, {enc.name: True, lang.name: True}, hosts=hosts)
        ex.run_step(schedule.for_rank(plan, rank), 0, program=lower_plan(schedule, plan, hosts)[rank])
        dist.barrier()
        stats = ex.stats
        out.append({"layout": layout.name, "payload_recv": stats.payload_recv, "payload_sent": stats.payload_sent,
                    "header_recv": stats.header_recv, "wrong": compute.wrong, "checked": compute.checked,
                    "cross_host": sum(n for dst, n in stats.sent_to.items() if hosts[dst] != hosts[rank])})
    return out


def summarize(per_rank: List[List[Dict]], microbatches: int = 4) -> Dict:
    rows = []
    for i, layout in enumerate(l for l in LAYOUTS if l.world_size == len(per_rank)):
        got = sum(r[i]["payload_recv"] for r in per_rank)
        sent = sum(r[i]["payload_sent"] for r in per_rank)
        minimum = minimum_bytes(layout, microbatches)
        cross, cross_min = sum(r[i]["cross_host"] for r in per_rank), cross_host_minimum(layout, microbatches)
        rows.append({"layout": layout.name, "payload_bytes": got, "minimum_bytes": minimum,
                     "ratio": round(got / minimum, 4), "cross_host_bytes": cross, "cross_host_minimum": cross_min,
                     "cross_host_ratio": round(cross / cross_min, 4), "sent_equals_received": sent == got,
                     "header_bytes": sum(r[i]["header_recv"] for r in per_rank),
                     "all_rows_correct": all(r[i]["wrong"] == 0 and r[i]["checked"] for r in per_rank)})
    return {"bridge_bytes_ratio": max(max(r["ratio"], r["cross_host_ratio"]) for r in rows), "layouts": rows}
