"""Small CLI contracts: --version, a closed pipe, and --steps driving the lr schedule."""

import re
import subprocess
import sys
from pathlib import Path

import mimo_runtime
from mimo_runtime.launch.commands.train import run_overrides
from mimo_runtime.launch.cli import build_parser
from mimo_runtime.topology import load_topology
from mimo_runtime.train.lr_schedule import lr_at

ROOT = Path(__file__).resolve().parents[2]
MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))
# 768 ranks: a plan whose JSON (~150 kB) overflows the pipe buffer, so the writer really meets a closed pipe
BIG = ["--set", "modules.images.ranks=256", "--set", "modules.images.parallel.dp=256", "--set",
       "modules.language.ranks=512", "--set", "modules.language.parallel.dp=256", "--set", "train.global_batch=512"]


def test_version_is_the_packages():
    proc = subprocess.run([MIMO_RUN, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"mimo-run {mimo_runtime.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.*)"$', pyproject, re.M).group(1) == mimo_runtime.__version__


def test_a_closed_pipe_ends_quietly_like_cat():
    proc = subprocess.run(f"'{MIMO_RUN}' plan topologies/vlm-4rank.yaml --json {' '.join(BIG)} | head -1",
                          shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout == "{\n"
    assert proc.stderr == ""


def test_steps_flag_sets_the_schedule_length_unless_decay_steps_is_given(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("modules: {images: {kind: encoder}, language: {kind: language}}\n"
                    "train: {steps: 20, lr: 1.0, optimizer: {lr_schedule: warmup_linear, warmup_steps: 2}}\n")
    args = build_parser().parse_args(["train", str(path), "--steps", "1000"])
    topo = load_topology(str(path), run_overrides(args))
    opt = topo.modules["language"].optimizer
    assert opt.decay_steps == 1000
    assert lr_at(opt, 500) > 0.4  # halfway down, not at lr 0 after step 20
    explicit = build_parser().parse_args(["train", str(path), "--steps", "1000", "--set",
                                          "train.optimizer.decay_steps=20"])
    assert load_topology(str(path), run_overrides(explicit)).modules["language"].optimizer.decay_steps == 20
