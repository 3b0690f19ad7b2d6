"""The examples run the repository's .venv interpreter, and `make` takes torch's CPU wheel on plain PyPI."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$0 $*" >> "$(dirname "$0")/calls.log"
case "$*" in
  *" plan "*) echo '{"world_size": 3}' ;;
  -c*) cat > /dev/null; echo 3 ;;
esac
"""


def fake_checkout(tmp_path, script):
    """`script` copied into an empty checkout whose .venv/bin/python only logs how it was called."""
    target = tmp_path / script
    target.parent.mkdir(parents=True)
    shutil.copy(ROOT / script, target)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return target, python


def run_without_python_override(cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_torchrun_script_runs_the_checkouts_venv_interpreter(tmp_path):
    script, python = fake_checkout(tmp_path, "examples/torchrun/train.sh")
    proc = run_without_python_override([str(script), "topologies/vlm-4rank.yaml", "--steps", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = (python.parent / "calls.log").read_text().splitlines()
    assert all(call.startswith(str(python) + " ") for call in calls)
    assert calls[-1].startswith(f"{python} -m torch.distributed.run --nproc-per-node 3 ")


def test_custom_encoder_script_runs_the_checkouts_venv_interpreter(tmp_path):
    script, python = fake_checkout(tmp_path, "examples/custom_encoder/train.sh")
    proc = run_without_python_override([str(script), "--steps", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (python.parent / "calls.log").read_text().startswith(f"{python} -m mimo_runtime.launch train ")


def test_a_missing_venv_is_one_line_naming_make_install(tmp_path):
    script, python = fake_checkout(tmp_path, "examples/torchrun/train.sh")
    python.unlink()
    proc = run_without_python_override([str(script), "topologies/vlm-4rank.yaml"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"error: no interpreter at {python}: run `make install` or set PYTHON\n"


def _torch_install_line(env):
    out = subprocess.run(["make", "-n", "-B", ".venv/.installed"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return next(line for line in out.stdout.splitlines() if "pip install -q torch==" in line)


def test_make_takes_torch_from_its_cpu_index_on_plain_pypi():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip's defaults: PyPI only
    assert _torch_install_line(env).endswith("torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu")


def test_make_uses_a_configured_local_wheel_directory_alone(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS=str(tmp_path))
    assert _torch_install_line(env).rstrip().endswith("torch==2.13.0")
