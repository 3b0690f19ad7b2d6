"""Every file in topologies/ loads, plans, and has the shape its name promises."""

from pathlib import Path

import pytest

from mimo_runtime.plan import ModuleLayout, make_plan
from mimo_runtime.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
# demo.yaml reads a dataset `make demo` writes first: tests/topology/test_demo_recipe.py loads it over test data
SHIPPED = sorted(p.name for p in (ROOT / "topologies").glob("*.yaml") if p.name != "demo.yaml")

# file -> (model, layout, {module: (rank_offset, tp, cp, dp, pp)})
SHAPES = {
    "colocated-1rank.yaml": ("tiny-vlm", "colocated", {"images": (0, 1, 1, 1, 1), "language": (0, 1, 1, 1, 1)}),
    "colocated-2rank.yaml": ("tiny-vlm", "colocated", {"images": (0, 1, 1, 2, 1), "language": (0, 1, 1, 2, 1)}),
    "vlm-2rank.yaml": ("tiny-vlm", "non_colocated", {"images": (0, 1, 1, 1, 1), "language": (1, 1, 1, 1, 1)}),
    "vlm-4rank.yaml": ("tiny-vlm", "non_colocated", {"images": (0, 1, 1, 2, 1), "language": (2, 2, 1, 1, 1)}),
    "vlm-fanout-4rank.yaml": ("tiny-vlm", "non_colocated",
                              {"images": (0, 2, 1, 1, 1), "language": (2, 1, 1, 2, 1)}),
    "avlm-4rank.yaml": ("tiny-avlm", "non_colocated",
                        {"images": (0, 1, 1, 1, 1), "audio": (1, 1, 1, 1, 1), "language": (2, 2, 1, 1, 1)}),
    "vlm-pp2-3rank.yaml": ("tiny-vlm", "non_colocated", {"images": (0, 1, 1, 1, 1), "language": (1, 1, 1, 1, 2)}),
    "lm-pp2-2rank.yaml": ("tiny-lm", "non_colocated", {"language": (0, 1, 1, 1, 2)}),
    "vlm-8rank.yaml": ("tiny-vlm", "non_colocated", {"images": (0, 2, 1, 2, 1), "language": (4, 2, 1, 1, 2)}),
    "vlm-cp-sp-6rank.yaml": ("tiny-vlm", "non_colocated",
                             {"images": (0, 1, 1, 2, 1), "language": (2, 2, 2, 1, 1)}),
}


def test_every_shipped_file_is_described_here():
    assert len(SHIPPED) >= 8
    assert SHIPPED == sorted(SHAPES)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_topology_plans_to_its_shape(name):
    topo = load_topology(str(ROOT / "topologies" / name))
    plan = make_plan(topo, topo.world_size)
    model, layout, modules = SHAPES[name]
    assert topo.model == model
    assert plan.layout == ModuleLayout(layout)
    got = {n: (m.rank_offset, m.tp, m.cp, m.dp, m.pp) for n, m in plan.modules.items()}
    assert got == modules
    assert plan.edges == tuple((n, "language") for n in modules if n != "language")
    assert (topo.train.global_batch, topo.train.micro_batch) == (8, 2)  # quick-check sizes
    assert all(plan.role(r).modules for r in range(plan.world_size))
    assert len(plan.to_json()["ranks"]) == plan.world_size
