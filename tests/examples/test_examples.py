"""Each example runs, in a small configuration, the way its README says."""

import json
import math
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = os.path.dirname(sys.executable)
    return dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def _run(cmd, timeout=400):
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-3000:]}"
    return out


def test_custom_encoder_example_trains_under_torchrun(tmp_path):
    """examples/custom_encoder (user encoder + GPT + user data, 3 ranks) through examples/torchrun."""
    metrics = tmp_path / "custom.jsonl"
    _run(["examples/custom_encoder/train.sh", "--torchrun", "--steps", "2", "--metrics", str(metrics)])
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)


def test_python_api_example_runs_its_own_loop():
    out = _run([sys.executable, "examples/python_api/train_loop.py", "--steps", "2", "--eval-every", "1"])
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "rank 0 holds ['images'] of a 2-rank plan"
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["1", "2"]
    assert sum("held-out loss" in line for line in lines) == 2
    losses = json.loads(lines[-1])["losses"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
