"""Freezing by pattern, and which encoders end up frozen entirely (no backward at all).

`frozen: true` (model.presets.freeze_encoder) freezes an encoder's layers and keeps its
projection; `freeze: [globs]` freezes any parameters of any module by name (params.matches).
Whether a whole encoder is frozen is a property of all its ranks together (a pipeline stage sees
only its layers), so it is decided from the world-wide parameter census below; every rank then
builds the same schedule with that encoder in `frozen_all`.
"""

from typing import Dict, List, Tuple

import torch.distributed as dist

from mimo_runtime.errors import TopologyError
from mimo_runtime.model.init import full_shape
from mimo_runtime.plan import Plan
from mimo_runtime.train.params import matches, named_module_parameters, relative_name

# {module: {canonical name: (trainable, full shape)}} over every rank
Census = Dict[str, Dict[str, Tuple[bool, Tuple[int, ...]]]]


def apply_freeze(model, plan: Plan, rank: int) -> None:
    for name in plan.modules_on(rank):
        patterns = plan.topology.modules[name].freeze
        for canonical, (p, *_rest) in named_module_parameters(model, name).items():
            if patterns and matches(canonical, name, patterns):
                p.requires_grad_(False)


def parameter_census(model, plan: Plan, rank: int) -> Census:
    """Every module's parameters across the world (one all_gather_object of names, at start-up)."""
    mine: Census = {}
    for name in plan.modules_on(rank):
        mine[name] = {n: (p.requires_grad, full_shape(p, pdim, tp_size))
                      for n, (p, pdim, _tp_rank, tp_size) in named_module_parameters(model, name).items()}
    gathered: List[Census] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    census: Census = {n: {} for n in plan.modules}
    for part in gathered:
        for name, params in part.items():
            census[name].update(params)
    return census


def check_freeze_patterns(plan: Plan, census: Census) -> None:
    """A pattern that matches nothing is a typo, not a choice: say so with a name that exists."""
    topo = plan.topology
    for name, m in topo.modules.items():
        for i, pattern in enumerate(m.freeze):
            if not any(matches(n, name, [pattern]) for n in census[name]):
                example = relative_name(next(iter(census[name]), ""), name)
                raise TopologyError(topo.source, f"modules.{name}.freeze[{i}]",
                                    f"'{pattern}' matches no parameter of '{name}' (names look like '{example}')")


def entirely_frozen(plan: Plan, census: Census) -> List[str]:
    """Encoders with no trainable parameter on any rank: they need no backward and send no gradients."""
    return [n for n in plan.encoders if census[n] and not any(t for t, _ in census[n].values())]
