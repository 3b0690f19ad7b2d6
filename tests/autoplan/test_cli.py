"""`mimo-run plan --auto`: prints the prediction next to the even split and writes a loadable topology."""

import subprocess
import sys
from pathlib import Path

from mimo_runtime.plan import make_plan
from mimo_runtime.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))


def mimo_run(*args):
    return subprocess.run([MIMO_RUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_auto_writes_a_topology_that_loads_and_prints_step_time_and_bubble(tmp_path):
    out = tmp_path / "auto.yaml"
    proc = mimo_run("plan", "--auto", "--world-size", "8", "--model", "tiny-avlm", "--memory-per-rank", "40",
                    "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    auto, naive = proc.stdout.splitlines()[:2]
    assert auto.startswith("auto plan") and "step" in auto and "bubble" in auto
    assert naive.startswith("even split") and "bubble" in naive
    plan = make_plan(load_topology(str(out)))
    assert plan.world_size == 8 and set(plan.modules) == {"images", "audio", "language"}


def test_auto_argument_errors_are_one_line():
    for args, flag in [(["--model", "tiny-vlm"], "--world-size"), (["--world-size", "4", "--model", "gpt9"], "--model"),
                       (["--world-size", "1", "--model", "tiny-vlm"], "--world-size"),
                       (["--world-size", "4", "--model", "tiny-vlm", "--memory-per-rank", "1e-9"], "--memory-per-rank"),
                       (["--world-size", "4", "--model", "tiny-vlm", "--frozen", "audio"], "--frozen"),
                       (["topologies/vlm-4rank.yaml", "--world-size", "4", "--model", "tiny-vlm"], "--auto")]:
        proc = mimo_run("plan", "--auto", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"error: {flag}: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_plan_without_a_topology_or_auto_is_an_error():
    proc = mimo_run("plan")
    assert proc.returncode == 2 and proc.stderr.startswith("error: topology: ")
