"""`mimo-run plan`: the JSON contract from DESIGN, the table, and one-line argument errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))


def mimo_run(*args):
    return subprocess.run([MIMO_RUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _entry(rank, name, tp=0, cp=0, dp=0, pp=0, first=True, last=True):
    return {"rank": rank, "modules": {name: {"tp_rank": tp, "cp_rank": cp, "dp_rank": dp, "pp_rank": pp,
                                             "is_first_stage": first, "is_last_stage": last}}}


def test_json_matches_the_design_contract_for_the_default_topology():
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "world_size": 4,
        "layout": "non_colocated",
        "modules": {
            "images": {"kind": "encoder", "rank_offset": 0, "size": 2, "tp": 1, "cp": 1, "dp": 2, "pp": 1},
            "language": {"kind": "language", "rank_offset": 2, "size": 2, "tp": 2, "cp": 1, "dp": 1, "pp": 1},
        },
        "edges": [["images", "language"]],
        "ranks": [_entry(0, "images"), _entry(1, "images", dp=1),
                  _entry(2, "language"), _entry(3, "language", tp=1)],
    }


def test_json_marks_pipeline_stages():
    proc = mimo_run("plan", "topologies/vlm-pp2-3rank.yaml", "--json")
    ranks = json.loads(proc.stdout)["ranks"]
    assert ranks[1] == _entry(1, "language", first=True, last=False)
    assert ranks[2] == _entry(2, "language", pp=1, first=False, last=True)


def test_table_shows_modules_and_every_rank():
    proc = mimo_run("plan", "topologies/vlm-8rank.yaml", "--world-size", "8")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "world_size=8 layout=non_colocated microbatches=4 edges=images->language"
    assert lines[2].split() == ["images", "encoder", "0-3", "2", "1", "2", "1"]
    assert lines[3].split() == ["language", "language", "4-7", "2", "1", "1", "2"]
    rows = [line.split() for line in lines[6:]]
    assert [r[0] for r in rows] == [str(r) for r in range(8)]
    assert rows[5] == ["5", "language", "first", "1", "0", "0", "0"]
    assert rows[6] == ["6", "language", "last", "0", "0", "0", "1"]


def test_world_size_that_differs_from_the_topology_is_one_line():
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", "--world-size", "3")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --world-size: 3 != 4, the ranks topology topologies/vlm-4rank.yaml needs"]


@pytest.mark.parametrize("value", ["x", "0", "-4", "2.5"])
def test_malformed_world_size_is_one_line(value):
    proc = mimo_run("plan", "topologies/vlm-4rank.yaml", f"--world-size={value}")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--world-size: " in lines[0], lines
    assert proc.stdout == ""


def test_missing_topology_argument_is_one_line():
    proc = mimo_run("plan")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: topology: a topology file is required (or --auto --world-size N --model PRESET)"]


def test_missing_file_is_one_line():
    proc = mimo_run("plan", "topologies/no-such-file.yaml")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: topologies/no-such-file.yaml: cannot read file: No such file or directory"]
