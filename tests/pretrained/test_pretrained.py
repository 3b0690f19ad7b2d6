"""`modules.NAME.pretrained`: which stored names load where, the name-mapping hook, partial and
non-strict loading, and one complete error for everything that does not fit.

Single process (colocated, tp 1); loading the same file into a TP-2 encoder of a heterogeneous
topology, checked against the colocated model, is tests/optim/test_controls_processes.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimo_runtime.errors import TopologyError
from mimo_runtime.groups import build_module_groups
from mimo_runtime.model import build_model, global_parameters
from mimo_runtime.plan import colocated_plan
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.freeze import parameter_census
from mimo_runtime.train.pretrained import load_pretrained
from tests.pretrained.hooks import RENAMES

ROOT = Path(__file__).resolve().parents[2]
IMG = "modality_submodules.images."


def topo(pretrained=None, source="t.yaml"):
    images = {"kind": "encoder", **({"pretrained": pretrained} if pretrained else {})}
    return topology_from_dict({"model": "tiny-vlm", "modules": {"images": images, "language": {"kind": "language"}}},
                              source=source)


@pytest.fixture(scope="module")
def model():
    plan = colocated_plan(topo(), 1)
    return build_model(plan, build_module_groups(plan, 30), 0, seed=0)


@pytest.fixture(scope="module")
def census(model):
    return parameter_census(model, colocated_plan(topo(), 1), 0)


@pytest.fixture(scope="module")
def other():
    """A whole model from another seed: what a pretrained file holds."""
    plan = colocated_plan(topo(), 1)
    m = build_model(plan, build_module_groups(plan, 30), 0, seed=5)
    return {n: p.detach().clone() for n, (p, *_rest) in global_parameters(m).items()}


@pytest.fixture
def fresh(model):
    """Reset the shared model to its seed-0 values after each test."""
    saved = {n: p.detach().clone() for n, (p, *_rest) in global_parameters(model).items()}
    yield model
    with torch.no_grad():
        for n, (p, *_rest) in global_parameters(model).items():
            p.copy_(saved[n])


def load(model, census, tmp_path, stored, **spec):
    path = tmp_path / "w.pt"
    torch.save(stored, path)
    load_pretrained(model, colocated_plan(topo({"path": str(path), **spec}), 1), 0, census)


def values(model):
    return {n: p.detach() for n, (p, *_rest) in global_parameters(model).items()}


def test_whole_model_file_loads_only_the_module_that_asks(fresh, census, other, tmp_path):
    before = {n: v.clone() for n, v in values(fresh).items()}
    load(fresh, census, tmp_path, other)
    for n, v in values(fresh).items():
        assert torch.equal(v, other[n] if n.startswith(IMG) else before[n]), n


def test_module_relative_names_load_like_full_names(fresh, census, other, tmp_path):
    load(fresh, census, tmp_path, {n[len(IMG):]: t for n, t in other.items() if n.startswith(IMG)})
    assert all(torch.equal(v, other[n]) for n, v in values(fresh).items() if n.startswith(IMG))


def test_map_hook_renames_stored_keys_and_drops_none(fresh, census, other, tmp_path):
    stored = {}
    for n, t in other.items():
        if n.startswith(IMG):
            rel = n[len(IMG):]
            short = next((old + rel[len(new):] for old, new in RENAMES.items() if rel.startswith(new)), rel)
            stored[short] = t
    stored["head.weight"] = torch.zeros(10, 64)
    load(fresh, census, tmp_path, stored, map="tests.pretrained.hooks:from_vit_names")
    assert all(torch.equal(v, other[n]) for n, v in values(fresh).items() if n.startswith(IMG))


def test_non_strict_loads_what_is_there_and_keeps_the_rest(fresh, census, other, tmp_path):
    before = {n: v.clone() for n, v in values(fresh).items()}
    part = {n: t for n, t in other.items() if n.startswith(IMG + "input_projections.")}
    load(fresh, census, tmp_path, part, strict=False)
    for n, v in values(fresh).items():
        assert torch.equal(v, part.get(n, before[n])), n


def test_missing_mismatched_and_unexpected_keys_are_listed_in_one_error(fresh, census, other, tmp_path):
    stored = {n: t for n, t in other.items() if n.startswith(IMG) and ".layers.1." not in n}
    stored[IMG + "encoders.digits_vit.pos_embed"] = torch.zeros(5, 32)
    stored[IMG + "encoders.digits_vit.cls_token"] = torch.zeros(1, 32)
    with pytest.raises(TopologyError) as e:
        load(fresh, census, tmp_path, stored)
    msg = str(e.value)
    assert msg.startswith(f"t.yaml: modules.images.pretrained: {tmp_path / 'w.pt'}: 1 shape mismatch "
                          "(encoders.digits_vit.pos_embed: file (5, 32) vs model (4, 32)); 12 missing keys "
                          "(encoders.digits_vit.block.layers.1.input_layernorm.weight, "), msg
    assert msg.endswith(", ... and 4 more); 1 unexpected key (modality_submodules.images.encoders.digits_vit.cls_token)")
    assert "\n" not in msg


@pytest.mark.parametrize("stored, spec, tail", [
    (None, {"path": "/nonexistent/w.pt"}, "modules.images.pretrained.path: no such file: /nonexistent/w.pt"),
    ({"x": [1, 2]}, {}, "modules.images.pretrained.path: {path} must hold a flat mapping of parameter name -> tensor"),
    ({"text.weight": torch.zeros(1)}, {"strict": False},
     "modules.images.pretrained: {path}: no key of {path} names a parameter of 'images' (expected e.g. "
     "'modality_submodules.images.encoders.digits_vit.pos_embed' or 'encoders.digits_vit.pos_embed')"),
    ({"a": torch.zeros(1), "b": torch.zeros(1)}, {"map": "tests.pretrained.hooks:collide"},
     "modules.images.pretrained.map: tests.pretrained.hooks:collide maps two stored keys to 'encoders.digits_vit.pos_embed'"),
    ({"a": torch.zeros(1)}, {"map": "tests.pretrained.nothere:fn"},
     "modules.images.pretrained.map: cannot import tests.pretrained.nothere:fn: No module named 'tests.pretrained.nothere'"),
    (b"not a torch file", {}, "modules.images.pretrained.path: cannot read {path} as a torch state dict (UnpicklingError); "
     "save one with torch.save({{name: tensor}})"),
])
def test_unusable_sources_give_one_line(fresh, census, tmp_path, stored, spec, tail):
    path = tmp_path / "w.pt"
    if isinstance(stored, bytes):
        path.write_bytes(stored)
    elif stored is not None:
        torch.save(stored, path)
    plan = colocated_plan(topo({"path": str(path), **spec}), 1)
    with pytest.raises(TopologyError) as e:
        load_pretrained(fresh, plan, 0, census)
    assert str(e.value) == "t.yaml: " + tail.format(path=path)


def test_cli_reports_a_bad_pretrained_file_in_one_line_with_exit_2(tmp_path):
    torch.save({"encoders.digits_vit.pos_embed": torch.zeros(3, 3)}, tmp_path / "enc.pt")
    topo_file = tmp_path / "t.yaml"
    topo_file.write_text("model: tiny-vlm\nmodules:\n  images: {kind: encoder, pretrained: {path: enc.pt, "
                         "strict: false}}\n  language: {kind: language}\ntrain: {global_batch: 2, micro_batch: 2}\n")
    proc = subprocess.run([str(Path(sys.executable).with_name("mimo-run")), "train", "t.yaml", "--steps", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: t.yaml: modules.images.pretrained: enc.pt: 1 shape mismatch "
        "(encoders.digits_vit.pos_embed: file (3, 3) vs model (4, 32))")
