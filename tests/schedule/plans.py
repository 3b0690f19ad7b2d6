"""Plans for schedule tests: presets through the topology parser, and large DAGs built directly."""

import functools
import random
from typing import Dict, Optional, Sequence

from mimo_runtime.plan import ModuleLayout, ModulePlan, Plan, make_plan
from mimo_runtime.schedule import Schedule, build_schedule
from mimo_runtime.topology import topology_from_dict


def preset_plan(modules: Dict[str, dict], model: str = "tiny-avlm", **top) -> Plan:
    return make_plan(topology_from_dict({"model": model, "modules": modules, **top}))


def dag_plan(encoders: Sequence[tuple], language_pp: int, tp: int = 1, dp: int = 1,
             layout: Optional[ModuleLayout] = None, language_vpp: int = 1) -> Plan:
    """Encoders (name, pp, frozen[, vpp]) on their own ranks, then the language model; no preset limits."""
    modules: Dict[str, ModulePlan] = {}
    offset = 0
    for name, pp, frozen, *vpp in encoders:
        modules[name] = ModulePlan(name, "encoder", offset, tp * dp * pp, tp, 1, dp, pp, frozen,
                                   vpp=vpp[0] if vpp else 1)
        offset += tp * dp * pp
    modules["language"] = ModulePlan("language", "language", offset, tp * dp * language_pp, tp, 1, dp, language_pp,
                                     vpp=language_vpp)
    world = offset + tp * dp * language_pp
    edges = tuple((e[0], "language") for e in encoders)
    return Plan(world, layout or ModuleLayout.NON_COLOCATED, modules, edges, 8, 1, None)


def chain_plan(p: int) -> Plan:
    """A homogeneous chain: a language model alone on p pipeline stages."""
    return dag_plan([], p)


@functools.lru_cache(maxsize=None)
def chain_schedule(p: int, m: int, kind: str = "1f1b") -> Schedule:
    """Shared between tests (read-only): building p=64, m=1024 takes about a second."""
    return build_schedule(chain_plan(p), m, kind)


def random_dag(rng: random.Random, max_stages: int = 64):
    """(plan, frozen_all): up to 4 encoders with random pp and frozen flags, <= max_stages stage nodes."""
    language_pp = rng.randint(1, 16)
    encoders = []
    budget = max_stages - language_pp
    for i in range(rng.randint(0, 4)):
        if budget < 1:
            break
        pp = rng.randint(1, min(12, budget))
        budget -= pp
        encoders.append((f"enc{i}", pp, rng.random() < 0.4))
    frozen_all = [name for name, _, _ in encoders if rng.random() < 0.25]
    return dag_plan(encoders, language_pp, tp=rng.choice([1, 2]), dp=rng.choice([1, 2])), frozen_all
