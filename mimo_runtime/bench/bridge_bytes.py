"""Bridge bytes on fan-in and fan-out layouts versus the theoretical minimum (CommStats, real Bridge).

Each sample carries a varying number of rows (images per sample differ), tagged with the sample's
index so every receiver also checks it got exactly its own samples. The encoder's ranks are on one
host and the language model's on another (the usual placement of modules on nodes). Two minimums:
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


def bridge_rank(rank: int, world_size: int, layouts=LAYOUTS, microbatches: int = 4) -> List[Dict]:
    """Forward and backward over the bridge for each layout that fits `world_size`; this rank's counts."""
    import torch
    import torch.distributed as dist

    from mimo_runtime.comm import Bridge, CommStats, Outbox

    out = []
    for layout in layouts:
        if layout.world_size != world_size:
            continue
        enc, lang = layout.modules()
        stats, outbox = CommStats(), Outbox(60.0)
        hosts = layout.hosts()
        bridge = Bridge(enc, lang, layout.global_mb, rank, outbox, stats, 60.0, hosts=hosts)
        wrong = 0
        for mb in range(microbatches):
            if enc.holds(rank):
                mine = list(owned(enc, enc.coords(rank).dp, layout.global_mb))
                rows = [rows_of(i, mb) for i in mine]
                x = torch.cat([torch.full((n, HIDDEN), float(i)) for i, n in zip(mine, rows)])
                bridge.send_forward(x, rows)
                grad = bridge.recv_backward(rows, HIDDEN, torch.float32, torch.device("cpu"))
                wrong += int(not torch.equal(grad, -x))
            else:
                mine = list(owned(lang, lang.coords(rank).dp, layout.global_mb))
                rows = [rows_of(i, mb) for i in mine]
                got = bridge.recv_forward(rows, HIDDEN, torch.float32, torch.device("cpu"))
                want = torch.cat([torch.full((n, HIDDEN), float(i)) for i, n in zip(mine, rows)])
                wrong += int(not torch.equal(got, want))
                bridge.send_backward(-got, rows)
            outbox.wait()
        dist.barrier()
        out.append({"layout": layout.name, "payload_recv": stats.payload_recv, "payload_sent": stats.payload_sent,
                    "header_recv": stats.header_recv, "wrong": wrong,
                    "cross_host": sum(n for dst, n in bridge.bytes_to.items() if hosts[dst] != hosts[rank])})
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
                     "all_rows_correct": all(r[i]["wrong"] == 0 for r in per_rank)})
    return {"bridge_bytes_ratio": max(max(r["ratio"], r["cross_host_ratio"]) for r in rows), "layouts": rows}
