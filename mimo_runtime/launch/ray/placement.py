"""One Ray placement group per module: one bundle per rank, from the module's `resources`.

Ranks that hold the same set of modules share a group (a colocated run has one group whose
bundles carry every module's resources). A group that cannot be placed within a bounded wait
is an error naming the module and the resource the cluster lacks, never an endless pending group.
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

from mimo_runtime.errors import TopologyError
from mimo_runtime.plan import Plan
from mimo_runtime.topology import Topology

DEFAULT_BUNDLE = {"CPU": 1.0}  # a module without `resources` still needs a slot per rank


@dataclass(frozen=True)
class RankSlot:
    rank: int
    modules: Tuple[str, ...]  # the modules this rank holds, in plan order
    group: int  # index into the placement groups
    bundle: int  # bundle index inside that group


def rank_bundle(topology: Topology, modules: Tuple[str, ...]) -> Dict[str, float]:
    """The resources one rank holding `modules` asks for: per key, the largest any of them asks."""
    out: Dict[str, float] = {}
    for name in modules:
        for key, value in (topology.modules[name].resources or DEFAULT_BUNDLE).items():
            out[key] = max(out.get(key, 0.0), float(value))
    return out


def rank_slots(plan: Plan) -> Tuple[List[Tuple[str, ...]], List[RankSlot]]:
    """Group ranks by the modules they hold: (group module-sets, slot per rank)."""
    groups: List[Tuple[str, ...]] = []
    slots: List[RankSlot] = []
    filled: Dict[Tuple[str, ...], int] = {}
    for rank in range(plan.world_size):
        modules = tuple(plan.modules_on(rank))
        if modules not in groups:
            groups.append(modules)
        slots.append(RankSlot(rank, modules, groups.index(modules), filled.get(modules, 0)))
        filled[modules] = filled.get(modules, 0) + 1
    return groups, slots


def actor_options(bundle: Mapping[str, float]) -> Dict:
    """Ray actor options asking for exactly one bundle's resources."""
    rest = dict(bundle)
    opts = {"num_cpus": rest.pop("CPU", 0.0), "num_gpus": rest.pop("GPU", 0.0)}
    if "memory" in rest:
        opts["memory"] = rest.pop("memory")
    opts["resources"] = rest
    return opts


def create_groups(topology: Topology, groups: List[Tuple[str, ...]], counts: List[int], timeout_s: float):
    """Create and wait for every group; raise a TopologyError naming what the cluster lacks."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pgs = []
    for modules, count in zip(groups, counts):
        bundle = rank_bundle(topology, modules)
        pgs.append(placement_group([dict(bundle) for _ in range(count)], strategy="PACK",
                                   name=f"mimo-{'+'.join(modules)}"))
    refs = [pg.ready() for pg in pgs]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    waiting = [i for i, ref in enumerate(refs) if ref not in ready]
    if not waiting:
        return pgs
    for pg in pgs:
        remove_placement_group(pg)
    i = waiting[0]
    raise TopologyError(topology.source, f"modules.{groups[i][0]}.resources",
                        unplaceable(rank_bundle(topology, groups[i]), counts[i], timeout_s,
                                    [n["Resources"] for n in ray.nodes() if n["Alive"]]))


def unplaceable(bundle: Mapping[str, float], count: int, waited_s: float, nodes: List[Mapping[str, float]]) -> str:
    """Why `count` bundles of `bundle` did not fit on `nodes` (their total resources)."""
    ask = ", ".join(f"{k}: {v:g}" for k, v in bundle.items())
    head = f"Ray could not place {count} rank(s) x {{{ask}}} within {waited_s:g} s: "
    offered = sorted({k for n in nodes for k in n if not k.startswith("node:")})
    for key in bundle:
        if not any(key in n for n in nodes):
            return head + f"no node offers '{key}' (the cluster offers {', '.join(offered)})"
    if not any(all(n.get(k, 0.0) >= v for k, v in bundle.items()) for n in nodes):
        return head + "no single node has all of these at once"
    for key, value in bundle.items():
        total = sum(n.get(key, 0.0) for n in nodes)
        if total < value * count:
            return head + f"'{key}': the cluster has {total:g} in all, these ranks need {value * count:g}"
    return head + "the resources exist but are in use (other jobs or placement groups hold them)"
