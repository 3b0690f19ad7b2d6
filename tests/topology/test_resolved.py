"""The resolved topology (`plan --resolved`, a checkpoint's topology.yaml) loads back to the same run."""

from pathlib import Path

import pytest
import yaml

from mimo_runtime.topology import load_topology, resolved_dict, resolved_yaml, topology_from_dict

ROOT = Path(__file__).resolve().parents[2]
# demo.yaml reads a dataset `make demo` writes first: tests/topology/test_demo_recipe.py loads it over test data
SHIPPED = sorted(p.name for p in (ROOT / "topologies").glob("*.yaml") if p.name != "demo.yaml")
ENC, LANG = {"kind": "encoder"}, {"kind": "language"}


def round_trip(topo):
    return topology_from_dict(yaml.safe_load(resolved_yaml(topo)), topo.source)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_topology_resolves_to_a_file_that_loads_to_the_same_topology(name):
    topo = load_topology(str(ROOT / "topologies" / name))
    assert round_trip(topo) == topo


@pytest.mark.parametrize("images, train_optimizer", [
    ({"name": "sgd", "momentum": 0.9, "lr": 0.5}, {}),
    ({"lr_schedule": "warmup_linear", "warmup_steps": 2}, {"lr_schedule": "warmup_cosine", "min_lr": 1.0e-5}),
    ({"name": "adamw", "betas": [0.8, 0.9]}, {"name": "sgd"}),
    ({}, {"betas": [0.8, 0.9], "eps": 1.0e-6, "decay_steps": 9}),
])
def test_mixed_optimizers_resolve_to_a_file_that_loads_to_the_same_topology(images, train_optimizer):
    raw = {"modules": {"images": {**ENC, "optimizer": images, "freeze": ["*.0.*"]},
                       "language": {**LANG, "pretrained": {"path": "lm.pt"}}},
           "train": {"steps": 12, "optimizer": train_optimizer}}
    topo = topology_from_dict(raw, "t.yaml")
    assert round_trip(topo) == topo


def test_a_module_may_override_a_key_train_optimizer_also_gives():
    raw = {"modules": {"images": {**ENC, "optimizer": {"min_lr": 1.0e-5}}, "language": LANG},
           "train": {"optimizer": {"lr_schedule": "warmup_cosine", "min_lr": 1.0e-6}}}
    topo = topology_from_dict(raw, "t.yaml")
    assert (topo.modules["images"].optimizer.min_lr, topo.modules["language"].optimizer.min_lr) == (1.0e-5, 1.0e-6)


def test_resolved_file_has_every_default_filled_in():
    out = resolved_dict(load_topology(str(ROOT / "topologies/vlm-2rank.yaml")))
    lang = out["modules"]["language"]
    assert (lang["rank_offset"], lang["parallel"], lang["precision"]) == (1, {"tp": 1, "cp": 1, "dp": 1, "pp": 1, "vpp": 1}, "fp32")
    assert lang["optimizer"]["decay_steps"] == out["train"]["steps"] == 20
    assert out["edges"] == [["images", "language"]]
