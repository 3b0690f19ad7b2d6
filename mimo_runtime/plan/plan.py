"""Topology (+ world size) -> Plan: the single source of truth for who holds what.

Pure Python, no torch.distributed. Rank enumeration follows megatron's HyperCommGrid with
dim_names ("tp", "cp", "dp", "pp") and a rank offset: tp varies fastest, pp slowest.
"""

import dataclasses
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from mimo_runtime.errors import ArgumentError
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY, ModuleLayout, ModuleStageInfo, RankRole
from mimo_runtime.topology import Topology

DIM_NAMES = ("tp", "cp", "dp", "pp")


@dataclass(frozen=True)
class Coords:
    tp: int
    cp: int
    dp: int
    pp: int


@dataclass(frozen=True)
class ModulePlan:
    """One module's rank range and parallel shape (a HyperCommGrid, as data)."""

    name: str
    kind: str
    rank_offset: int
    size: int
    tp: int
    cp: int
    dp: int
    pp: int
    frozen: bool = False
    sequence_parallel: bool = False  # megatron SP: the sequence is split over the TP ranks too
    vpp: int = 1  # virtual stages (model chunks) per rank: chunk c of stage p is virtual stage c * pp + p

    def virtual_stage(self, pp: int, chunk: int) -> int:
        """Megatron's interleaving: which of the module's vpp * pp layer blocks chunk `chunk` of stage `pp` holds."""
        return chunk * self.pp + pp

    @property
    def sequence_shards(self) -> int:
        """TP ranks that split the (cp-local) sequence: tp with sequence parallelism, else 1."""
        return self.tp if self.sequence_parallel else 1

    def slot(self, rank: int) -> int:
        """Which piece of a replica's sequence `rank` holds (plan/sequence.py)."""
        c = self.coords(rank)
        return c.cp * self.sequence_shards + (c.tp if self.sequence_parallel else 0)

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (self.tp, self.cp, self.dp, self.pp)

    @property
    def dim_names(self) -> Tuple[str, ...]:
        return DIM_NAMES

    @property
    def ranks(self) -> range:
        return range(self.rank_offset, self.rank_offset + self.size)

    def holds(self, rank: int) -> bool:
        return self.rank_offset <= rank < self.rank_offset + self.size

    def coords(self, rank: int) -> Coords:
        local = rank - self.rank_offset
        if not 0 <= local < self.size:
            raise ValueError(f"rank {rank} is not in module '{self.name}' (ranks {self.ranks.start}-{self.ranks.stop - 1})")
        tp, rest = local % self.tp, local // self.tp
        cp, rest = rest % self.cp, rest // self.cp
        dp, pp = rest % self.dp, rest // self.dp
        return Coords(tp, cp, dp, pp)

    def rank(self, tp: int = 0, cp: int = 0, dp: int = 0, pp: int = 0) -> int:
        return self.rank_offset + tp + self.tp * (cp + self.cp * (dp + self.dp * pp))

    def stage_info(self, rank: int) -> ModuleStageInfo:
        pp = self.coords(rank).pp
        return ModuleStageInfo(pp == 0, pp == self.pp - 1)

    def stage_ranks(self, pp: int) -> List[int]:
        """Every rank of pipeline stage `pp`, in rank order."""
        inner = self.tp * self.cp * self.dp
        start = self.rank_offset + pp * inner
        return list(range(start, start + inner))


@dataclass(frozen=True)
class Plan:
    world_size: int
    layout: ModuleLayout
    modules: Mapping[str, ModulePlan]
    edges: Tuple[Tuple[str, str], ...]
    global_batch: int
    micro_batch: int
    topology: Topology

    @property
    def language(self) -> ModulePlan:
        return self.modules[MIMO_LANGUAGE_MODULE_KEY]

    @property
    def encoders(self) -> Dict[str, ModulePlan]:
        return {n: m for n, m in self.modules.items() if m.kind == "encoder"}

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // (self.micro_batch * self.language.dp)

    def samples_per_microbatch(self, module: str) -> int:
        """Samples one DP replica of `module` handles per microbatch (upstream's rule)."""
        return self.micro_batch * self.language.dp // self.modules[module].dp

    def modules_on(self, rank: int) -> List[str]:
        return [n for n, m in self.modules.items() if m.holds(rank)]

    def role(self, rank: int) -> RankRole:
        return RankRole({n: self.modules[n].stage_info(rank) for n in self.modules_on(rank)}, self.layout)

    def coords(self, rank: int) -> Dict[str, Coords]:
        return {n: self.modules[n].coords(rank) for n in self.modules_on(rank)}

    def rank_entries(self) -> Iterator[dict]:
        for rank in range(self.world_size):
            entry = {}
            for n in self.modules_on(rank):
                m = self.modules[n]
                c = m.coords(rank)
                entry[n] = {"tp_rank": c.tp, "cp_rank": c.cp, "dp_rank": c.dp, "pp_rank": c.pp,
                            "is_first_stage": c.pp == 0, "is_last_stage": c.pp == m.pp - 1}
            yield {"rank": rank, "modules": entry}

    def to_json(self) -> dict:
        return {
            "world_size": self.world_size,
            "layout": self.layout.value,
            "modules": {n: {"kind": m.kind, "rank_offset": m.rank_offset, "size": m.size,
                            "tp": m.tp, "cp": m.cp, "dp": m.dp, "pp": m.pp} for n, m in self.modules.items()},
            "edges": [list(e) for e in self.edges],
            "ranks": list(self.rank_entries()),
        }


def make_plan(topology: Topology, world_size: Optional[int] = None) -> Plan:
    """Plan a validated topology; `world_size`, when given, must equal the topology's."""
    needed = topology.world_size
    if world_size is not None and world_size != needed:
        raise ArgumentError("--world-size", f"{world_size} != {needed}, the ranks topology "
                                            f"{topology.source} needs")
    modules = {n: ModulePlan(n, m.kind, m.rank_offset, m.ranks, m.parallel.tp, m.parallel.cp,
                             m.parallel.dp, m.parallel.pp, m.frozen, m.sequence_parallel, m.parallel.vpp)
               for n, m in topology.modules.items()}
    spans = {(m.rank_offset, m.size) for m in modules.values()}
    one_stage = all(m.pp == 1 for m in modules.values())
    layout = ModuleLayout.COLOCATED if len(spans) == 1 and one_stage else ModuleLayout.NON_COLOCATED
    return Plan(needed, layout, modules, tuple(topology.edges), topology.train.global_batch,
                topology.train.micro_batch, topology)


def colocated_plan(topology: Topology, nproc: int) -> Plan:
    """The same model, data and global batch with every module on all `nproc` ranks as pure DP.

    nproc=1 is the single-process reference every heterogeneous topology is tested against.
    """
    t = topology.train
    if t.global_batch % nproc:
        raise ArgumentError("--nproc", f"{nproc} does not divide train.global_batch={t.global_batch}")
    per_rank = t.global_batch // nproc
    micro = t.micro_batch if per_rank % t.micro_batch == 0 else per_rank
    modules = {n: ModulePlan(n, m.kind, 0, nproc, 1, 1, nproc, 1, m.frozen) for n, m in topology.modules.items()}
    return Plan(nproc, ModuleLayout.COLOCATED, modules, tuple(topology.edges), t.global_batch, micro,
                dataclasses.replace(topology, placement="colocated"))
