"""The Ray launcher on a two-node cluster on 127.0.0.1: placement by resource, same losses as torchrun."""

import json
import os
import re
import subprocess
import sys

from tests.launch.conftest import HETERO, REPO, STEPS, child_env

JOB = "examples/ray/train_job.py"
MODULE_RESOURCE = {0: "enc", 1: "llm", 2: "llm"}  # rank -> the resource its module asks for


def _check_run(summary: dict, cluster, torchrun_losses) -> None:
    placed = {p["rank"]: p["node_id"] for p in summary["placement"]}
    assert placed == {rank: cluster.node_by_resource[res] for rank, res in MODULE_RESOURCE.items()}
    assert [p["node_ip"] for p in summary["placement"]] == ["127.0.0.1"] * 3
    assert [m["step"] for m in summary["metrics"]] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in summary["metrics"]] == torchrun_losses
    assert summary["attempts"] == 1


def test_each_rank_runs_on_the_node_its_module_asks_for_with_torchrun_losses(ray_cluster, torchrun_losses, tmp_path):
    out, metrics = tmp_path / "run.json", tmp_path / "metrics.jsonl"
    proc = subprocess.run([sys.executable, JOB, "--topology", HETERO, "--out", str(out), "--metrics", str(metrics)],
                          cwd=REPO, env=child_env(RAY_ADDRESS=ray_cluster.address), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_run(json.loads(out.read_text()), ray_cluster, torchrun_losses)
    assert [json.loads(line)["loss"] for line in metrics.read_text().splitlines()] == torchrun_losses
    # Every rank's log lines reach the driver with the rank and module in front; progress is shown.
    logs = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # Ray colours the prefixes
    for rank, module, local in ((0, "images", 0), (1, "language", 0), (2, "language", 1)):
        assert re.search(rf"\(rank{rank} {module} stage 0 pid=\d+[^)]*\) joining the process group at 127\.0\.0\.1:\d+ "
                         rf"as rank {rank}/3 \(local rank {local}, gloo on lo\)", logs), logs
    assert f"step {STEPS}/{STEPS}  loss" in proc.stderr


def test_ray_job_submit_places_ranks_and_matches_torchrun(ray_cluster, torchrun_losses, tmp_path):
    out = tmp_path / "run.json"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    proc = subprocess.run([ray_cli, "job", "submit", "--address", ray_cluster.dashboard, "--working-dir", ".", "--",
                           sys.executable, JOB, "--topology", HETERO, "--out", str(out)],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"done: {STEPS} steps" in proc.stdout
    _check_run(json.loads(out.read_text()), ray_cluster, torchrun_losses)


def test_a_resource_the_cluster_lacks_is_a_clear_error_after_a_bounded_wait(ray_cluster):
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train",
                           "tests/launch/topologies/needs-h100.yaml", "--ray", "--address", ray_cluster.address, "--placement-timeout", "3"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "error: tests/launch/topologies/needs-h100.yaml: modules.language.resources: Ray could not place 1 rank(s) "
        "x {CPU: 1, accelerator_type:H100: 1} within 3 s: no node offers 'accelerator_type:H100' "
        "(the cluster offers CPU, enc, llm, memory, object_store_memory)")
