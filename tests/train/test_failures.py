"""A rank dying mid-step ends the job non-zero, naming the rank and its module, without hanging."""

import subprocess
import sys
import time

TOPOLOGY = "topologies/vlm-4rank.yaml"


def _train(env_fault: str, *extra: str):
    env = {"MIMO_INJECT_FAULT": env_fault, "GLOO_SOCKET_IFNAME": "lo", "PATH": "/usr/bin:/bin"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train", TOPOLOGY, "--steps", "3",
                           "--timeout", "15", *extra], capture_output=True, text=True, timeout=120, env=env)
    return proc, time.monotonic() - t0


def test_rank_killed_mid_step_is_named_and_job_fails():
    proc, took = _train("2:1:exit")
    assert proc.returncode != 0
    assert "rank 2 (language stage 0)" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr.splitlines()[-1]
    assert took < 90


def test_rank_raising_mid_step_is_named_with_its_error():
    proc, _ = _train("0:1:raise")
    assert proc.returncode != 0
    assert "rank 0 (images stage 0)" in proc.stderr and "injected fault on rank 0" in proc.stderr, proc.stderr[-2000:]


def test_bad_topology_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train", "missing.yaml"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: missing.yaml: cannot read file: No such file or directory"


def test_nproc_must_match_world_size():
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train", TOPOLOGY, "--nproc", "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --nproc: 3 != 4")


def test_negative_frozen_lead_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train", TOPOLOGY, "--frozen-lead", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --frozen-lead: must be >= 0, got -1"
