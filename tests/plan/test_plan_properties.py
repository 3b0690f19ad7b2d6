"""Properties of plans for random valid topologies of up to 16,384 ranks.

Every rank has a role, module ranges tile the world, coordinates are a bijection, stages sit
where megatron puts them (pp slowest), and the rank enumeration equals megatron's HyperCommGrid
for the same shape, dim order and rank offset (so the plan and the real groups agree).
"""

import itertools
import os
from types import SimpleNamespace
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from megatron.core.hyper_comm_grid import HyperCommGrid

from mimo_runtime.groups import GROUP_DIMS
from mimo_runtime.plan import DIM_NAMES, ModuleLayout, RankRole, make_plan
from mimo_runtime.topology import topology_from_dict

MAX_RANKS = 16384
ENCODERS = {"tiny-lm": [], "tiny-vlm": ["images"], "tiny-avlm": ["images", "audio"]}

# The benchmark's shape: images + audio + language on exactly 16,384 ranks.
LARGEST = {
    "model": "tiny-avlm",
    "modules": {
        "images": {"kind": "encoder", "parallel": {"tp": 2, "dp": 2048}},
        "audio": {"kind": "encoder", "parallel": {"tp": 1, "dp": 4096}},
        "language": {"kind": "language", "parallel": {"tp": 4, "cp": 2, "dp": 512, "pp": 2}},
    },
    "train": {"global_batch": 4096, "micro_batch": 8},
}


@st.composite
def topologies(draw):
    """A valid topology dict: powers of two keep dp sizes dividing one another and batches even."""
    model = draw(st.sampled_from(sorted(ENCODERS)))
    l_tp, l_cp, l_pp = (draw(st.sampled_from(v)) for v in ([1, 2, 4], [1, 2, 4, 8], [1, 2, 4]))
    l_dp = 2 ** draw(st.integers(0, 9))
    colocated = draw(st.booleans()) and l_pp == 1 and l_cp == 1
    modules = {"language": {"kind": "language", "parallel": {"tp": l_tp, "cp": l_cp, "dp": l_dp, "pp": l_pp}}}
    size = l_tp * l_cp * l_dp * l_pp
    biggest_dp = l_dp
    for name in ENCODERS[model]:
        tp = draw(st.sampled_from([t for t in (1, 2, 4) if not colocated or t <= size]))
        if colocated:
            dp = size // tp  # same ranks as the language model
        else:
            shift = draw(st.integers(-4, 3))
            dp = max(1, l_dp << shift if shift >= 0 else l_dp >> -shift)
        pp = 1 if colocated else draw(st.sampled_from([1, 2]))
        modules[name] = {"kind": "encoder", "parallel": {"tp": tp, "dp": dp, "pp": pp}}
        biggest_dp = max(biggest_dp, dp)
    micro = max(1, biggest_dp // l_dp) * 2 ** draw(st.integers(0, 2))
    order = draw(st.permutations(sorted(modules)))
    raw = {"model": model, "modules": {n: modules[n] for n in order},
           "train": {"micro_batch": micro, "global_batch": micro * l_dp * draw(st.integers(1, 4))}}
    if colocated:
        raw["placement"] = "colocated"
        for m in modules.values():
            m["ranks"] = size
    return raw


def _ranks(raw):
    if raw.get("placement") == "colocated":
        return raw["modules"]["language"]["ranks"]
    return sum(p["tp"] * p.get("cp", 1) * p["dp"] * p.get("pp", 1)
               for p in (m["parallel"] for m in raw["modules"].values()))


def small_enough(raw):
    return _ranks(raw) <= MAX_RANKS


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def megatron_order_enum(m, dims):
    """The enumeration HyperCommGrid would make, rebuilt from the plan's rank(): groups over the
    remaining dims (slowest first), members over `dims`, both in reversed dim_names order."""
    rev = list(DIM_NAMES)[::-1]
    outer = [d for d in rev if d not in dims]
    inner = [d for d in rev if d in dims]
    size = dict(zip(DIM_NAMES, m.shape))
    return [[m.rank(**dict(zip(outer, o)), **dict(zip(inner, i)))
             for i in itertools.product(*(range(size[d]) for d in inner))]
            for o in itertools.product(*(range(size[d]) for d in outer))]


@PROPERTY
@given(topologies().filter(small_enough))
@example(LARGEST)
def test_ranges_tile_the_world_and_every_rank_has_a_role(raw):
    plan = make_plan(topology_from_dict(raw))
    assert plan.world_size == _ranks(raw) <= MAX_RANKS
    spans = sorted((m.rank_offset, m.rank_offset + m.size) for m in plan.modules.values())
    if plan.topology.placement == "colocated":
        assert set(spans) == {(0, plan.world_size)}
    else:
        assert spans[0][0] == 0 and spans[-1][1] == plan.world_size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for rank in range(plan.world_size):
        role = plan.role(rank)
        assert role.modules and set(role.modules) == set(plan.coords(rank))


@PROPERTY
@given(topologies().filter(small_enough))
@example(LARGEST)
def test_coords_are_a_bijection_with_ranks(raw):
    plan = make_plan(topology_from_dict(raw))
    for m in plan.modules.values():
        seen = set()
        for rank in m.ranks:
            c = m.coords(rank)
            assert 0 <= c.tp < m.tp and 0 <= c.cp < m.cp and 0 <= c.dp < m.dp and 0 <= c.pp < m.pp
            assert m.rank(c.tp, c.cp, c.dp, c.pp) == rank
            seen.add((c.tp, c.cp, c.dp, c.pp))
        assert len(seen) == m.size == m.tp * m.cp * m.dp * m.pp


@PROPERTY
@given(topologies().filter(small_enough))
@example(LARGEST)
def test_first_and_last_stages_are_the_first_and_last_blocks_of_ranks(raw):
    plan = make_plan(topology_from_dict(raw))
    for name, m in plan.modules.items():
        block = m.size // m.pp  # pp varies slowest: each stage is a contiguous block
        first = {r for r in m.ranks if plan.role(r).is_first_stage(name)}
        last = {r for r in m.ranks if plan.role(r).is_last_stage(name)}
        assert first == set(range(m.rank_offset, m.rank_offset + block))
        assert last == set(range(m.rank_offset + m.size - block, m.rank_offset + m.size))
        assert first == set(m.stage_ranks(0)) and last == set(m.stage_ranks(m.pp - 1))


@PROPERTY
@given(topologies().filter(small_enough))
@example(LARGEST)
def test_rank_enumeration_equals_megatron_hyper_comm_grid(raw):
    plan = make_plan(topology_from_dict(raw))
    with mock.patch.dict(os.environ, {"WORLD_SIZE": str(plan.world_size)}):
        for m in plan.modules.values():
            grid = HyperCommGrid(list(m.shape), list(DIM_NAMES), rank_offset=m.rank_offset)
            for _, dims in GROUP_DIMS:
                assert grid.get_rank_enum(dims) == megatron_order_enum(m, dims), (m.name, dims)


@PROPERTY
@given(topologies().filter(small_enough))
@example(LARGEST)
def test_rank_role_from_grids_matches_the_plan(raw):
    plan = make_plan(topology_from_dict(raw))
    grids = {n: SimpleNamespace(rank_offset=m.rank_offset, shape=list(m.shape), dim_names=list(DIM_NAMES))
             for n, m in plan.modules.items()}
    modalities = [n for n in plan.modules if n != "language"]
    layouts = set()
    for rank in range(plan.world_size):
        role = RankRole.build(modalities, grids, rank)
        assert role == plan.role(rank)
        layouts.add(role.mode)
    assert layouts == {plan.layout}
    one_span = len({(m.rank_offset, m.size) for m in plan.modules.values()}) == 1
    one_stage = all(m.pp == 1 for m in plan.modules.values())
    assert (plan.layout == ModuleLayout.COLOCATED) == (one_span and one_stage)
