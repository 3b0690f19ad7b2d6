"""`mimo-run schedule TOPOLOGY [--microbatches M] [--schedule ...]`."""

import subprocess
import sys

import pytest

from mimo_runtime.launch.cli import main

TOPOLOGY = """
name: sched
model: tiny-vlm
modules:
  images:   {kind: encoder, ranks: 2, parallel: {dp: 2}}
  language: {kind: language, ranks: 4, parallel: {tp: 2, pp: 2}}
train: {global_batch: 8, micro_batch: 2}
"""


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "sched.yaml"
    path.write_text(TOPOLOGY)
    return str(path)


def test_prints_the_grid_and_the_unit_cost_bubble(topology, capsys):
    assert main(["schedule", topology]) == 0
    out = capsys.readouterr().out
    assert "1f1b schedule, 4 microbatches, 3 stage nodes" in out
    assert "images.0    ranks 0-1  F0 SEND_F0>language.0 F1 SEND_F1>language.0 F2 SEND_F2>language.0 RECV_B0" in out
    assert "language.1  ranks 4-5  RECV_F0<language.0 F0 B0 SEND_B0>language.0" in out
    assert "bubble fraction (unit compute costs, free communication): 0.3333" in out  # (3-1)/(4+3-1)


def test_microbatches_and_schedule_flags(topology, capsys):
    assert main(["schedule", topology, "--microbatches", "8", "--schedule", "forward"]) == 0
    out = capsys.readouterr().out
    assert "forward schedule, 8 microbatches" in out and " B0" not in out


@pytest.mark.parametrize("argv,message", [
    (["--microbatches", "0"], "error: --microbatches: must be positive, got 0"),
    (["--schedule", "zigzag"], "error: --schedule: invalid choice: 'zigzag'"),
])
def test_bad_flags_are_one_line_errors_with_exit_2(topology, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["schedule", topology] + argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_bad_topology_is_a_one_line_error_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOPOLOGY.replace("tp: 2, pp: 2", "tp: 3, pp: 2"))
    assert main(["schedule", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: modules.language") and err.count("\n") == 1


def test_schedule_package_and_command_import_no_torch():
    code = ("import sys, mimo_runtime.schedule, mimo_runtime.launch.commands.schedule; "
            "print(sorted(m for m in ('torch', 'megatron') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_json_prints_lists_bubble_deadlock_checks_and_each_ranks_p2p_groups(capsys):
    import json

    assert main(["schedule", "topologies/vlm-4rank.yaml", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lists"]["images.0"][:2] == ["images.0:F0", "images.0:SEND_F0>language.0"]
    assert out["bubble"] == pytest.approx(0.2)
    assert out["deadlock_free_async"] is True and out["deadlock_free_nccl"] is True
    assert len(out["p2p"]) == 4
    assert out["p2p"][2][1] == [["send", 0], ["send", 1], ["recv", 0], ["recv", 1]]
