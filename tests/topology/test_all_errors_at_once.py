"""A file with several independent mistakes reports all of them in one run, one `error:` line each."""

import subprocess
import sys
from pathlib import Path

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology import Problems, TopologyErrors, load_topology, topology_from_dict

MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))

THREE_RULES = """\
model: tiny-vlm
modules:
  images: {kind: encoder, ranks: 2}
  language: {kind: language, ranks: 3, parallel: {tp: 3}}
train: {global_batch: 7, micro_batch: 2, lr: 1.0e-3, optimizer: {min_lr: 0.5}}
"""

THREE_KEYS = """\
model: tiny-vlm
modules:
  images: {kind: encoder, ranks: 2, parallel: {tpp: 1}}
  language: {kind: language, ranks: 3, frozen: yes please}
train: {global_batch: 7, micro_batch: 2, lr: 1e-3}
"""


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cli_reports_three_cross_field_mistakes_at_once_and_exits_2(tmp_path):
    write(tmp_path, THREE_RULES)
    proc = subprocess.run([MIMO_RUN, "plan", "t.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: t.yaml: modules.language.parallel.tp: 3 does not divide the 4 attention heads of preset 'tiny-vlm'",
        "error: t.yaml: train.global_batch: 7 is not a multiple of micro_batch x language dp = 2 x 1 = 2",
        "error: t.yaml: train.optimizer.min_lr: 0.5 is above the peak lr 0.001",
    ]
    assert proc.stdout == ""


def test_cli_reports_three_key_mistakes_in_different_sections_at_once(tmp_path):
    write(tmp_path, THREE_KEYS)
    proc = subprocess.run([MIMO_RUN, "plan", "t.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: t.yaml: modules.images.parallel.tpp: unknown key (did you mean 'tp'?)",
        "error: t.yaml: modules.language.frozen: expected true or false, got 'yes please'",
        "error: t.yaml: train.lr: expected a number, got '1e-3' (YAML reads 1e-3 without a dot as text; write 1.0e-3)",
    ]


def test_several_errors_are_one_topology_error_whose_first_fields_are_the_first_mistake(tmp_path):
    with pytest.raises(TopologyError) as err:
        load_topology(str(write(tmp_path, THREE_KEYS)))
    assert isinstance(err.value, TopologyErrors) and len(err.value.errors) == 3
    assert err.value.field == "modules.images.parallel.tpp"


def test_schema_mistakes_stop_the_cross_field_rules_that_would_read_them(tmp_path):
    # ranks: two is a type error; the parallel sizes of that module cannot be checked without it
    text = THREE_RULES.replace("ranks: 2}", "ranks: two}")
    with pytest.raises(TopologyError) as err:
        load_topology(str(write(tmp_path, text)))
    assert err.value.line().splitlines() == [f"error: {tmp_path / 't.yaml'}: modules.images.ranks: expected an integer, got 'two'"]


def test_a_mistake_every_module_inherits_from_train_optimizer_is_reported_once():
    raw = {"modules": {"images": {"kind": "encoder"}, "language": {"kind": "language"}},
           "train": {"optimizer": {"betas": [0.9, 1.5]}}}
    with pytest.raises(TopologyError) as err:
        topology_from_dict(raw, "t.yaml")
    assert err.value.line() == "error: t.yaml: train.optimizer.betas: each beta must be in [0, 1), got [0.9, 1.5]"


def test_a_new_check_records_problems_with_add_and_guard_then_stop_raises_them_all():
    problems = Problems("t.yaml")
    problems.add("data.path", "no such directory")
    with problems.guard():
        raise TopologyError("t.yaml", "model.hf", "no config.json")
    with problems.guard():
        pass
    with pytest.raises(TopologyErrors) as err:
        problems.stop()
    assert err.value.line() == "error: t.yaml: data.path: no such directory\nerror: t.yaml: model.hf: no config.json"
    Problems("t.yaml").stop()  # nothing recorded: nothing raised
