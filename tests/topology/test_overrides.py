"""`--set key.path=value`: YAML-typed overrides of a topology file, validated like the file."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mimo_runtime.errors import ArgumentError
from mimo_runtime.topology import load_topology
from mimo_runtime.topology.overrides import apply_overrides, parse_override

ROOT = Path(__file__).resolve().parents[2]
MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))


def mimo_run(*args):
    return subprocess.run([MIMO_RUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("text, value", [
    ("train.steps=7", 7), ("train.lr=1.0e-3", 1.0e-3), ("train.packing=true", True),
    ("modules.images.freeze=['*.0.*', '*bias']", ["*.0.*", "*bias"]), ("name=a=b", "a=b"),
    ("modules.images.pretrained=", None), ("modules.images.parallel={tp: 1, dp: 2}", {"tp": 1, "dp": 2}),
])
def test_values_are_read_as_yaml(text, value):
    assert parse_override(text)[1] == value


def test_overrides_create_missing_sections_and_leave_the_file_mapping_alone():
    raw = {"modules": {"images": {"kind": "encoder"}}}
    out = apply_overrides(raw, [("modules.images.parallel.dp", 2), ("train.seed", 5)])
    assert out == {"modules": {"images": {"kind": "encoder", "parallel": {"dp": 2}}}, "train": {"seed": 5}}
    assert raw == {"modules": {"images": {"kind": "encoder"}}}


def test_a_path_through_a_value_that_is_not_a_mapping_is_a_flag_error():
    with pytest.raises(ArgumentError) as err:
        apply_overrides({"train": {"lr": 0.1}}, [("train.lr.peak", 1)])
    assert err.value.line() == "error: --set train.lr.peak: train.lr is 0.1, not a mapping; set it whole (--set train.lr=...)"


def test_overridden_values_reach_the_topology_and_its_derived_defaults():
    topo = load_topology(str(ROOT / "topologies/vlm-4rank.yaml"),
                         ["train.steps=50", "modules.images.optimizer.lr=2.0e-3", "train.global_batch=16"])
    assert topo.train.steps == 50 and topo.train.global_batch == 16
    assert topo.modules["images"].optimizer.lr == 2.0e-3 and topo.modules["language"].optimizer.lr == 3.0e-4
    assert topo.modules["images"].optimizer.decay_steps == 50  # follows train.steps


def test_cli_unknown_key_is_reported_as_the_flag_with_a_suggestion():
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", "--set", "train.lrr=1.0e-3")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: --set train.lrr: unknown key (did you mean 'lr'?)"]


def test_cli_bad_values_are_reported_as_the_flags_and_file_mistakes_as_the_file(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text((ROOT / "topologies/vlm-4rank.yaml").read_text().replace("steps: 20", "steps: 0"))
    proc = mimo_run("schedule", str(bad), "--set", "modules.images.parallel.tp=3", "--set", "train.lr=3e-4")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {bad}: train.steps: must be positive, got 0",
        "error: --set train.lr: expected a number, got '3e-4' (YAML reads 3e-4 without a dot as text; write 3.0e-4)",
    ]
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", "--set", "modules.images.parallel.tp=3")
    assert proc.stderr.splitlines() == ["error: --set modules.images.parallel.tp: tp*cp*dp*pp = 3*1*2*1 = 6 != ranks=2"]


@pytest.mark.parametrize("flag, line", [
    ("x", "error: --set: expected key.path=value, got 'x'"),
    ("train..lr=1", "error: --set train..lr: empty key in the path (write e.g. train.lr=1.0e-3)"),
    ("train.lr=[", "error: --set train.lr: invalid YAML value '[': expected the node content, but found '<stream end>'"),
])
def test_cli_malformed_flags_are_one_line(flag, line):
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", "--set", flag)
    assert (proc.returncode, proc.stderr.splitlines()) == (2, [line])


def test_cli_train_rejects_a_bad_override_before_any_rank_starts():
    proc = mimo_run("train", "topologies/vlm-2rank.yaml", "--set", "train.micro_batch=16")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --set train.micro_batch: 16 is larger than train.global_batch=8"]


def test_cli_plan_resolved_shows_the_overridden_value_with_every_default():
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", "--resolved", "--set", "train.seed=7")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["train"]["seed"] == 7
    assert resolved["modules"]["images"]["parallel"] == {"tp": 1, "cp": 1, "dp": 2, "pp": 1, "vpp": 1}
