"""benchmarks/gpu_check.py on a CPU machine: `--dry-run` runs every part's code path at toy size and
prints every key the GPU run prints; without CUDA a plain run is one `skip` line and exit 0; a part
that runs past its cap is killed and reported as a timeout (with what it had written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "benchmarks" / "gpu_check.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo"}
KEYS = {
    "colocated_vs_cpu": {"status", "te_layers", "cpu_fp32_losses", "gpu_fp32_runtime", "gpu_fp32_megatron",
                         "gpu_bf16_megatron", "resume_runtime_ckpt_with_megatron", "pass", "wall_s", "cap_s"},
    "throughput_vs_hf": {"status", "model", "ours", "hf_transformers", "ours_over_hf_tokens_per_s", "wall_s", "cap_s"},
    "heterogeneous_nccl": {"status", "heterogeneous_losses", "colocated_losses", "max_rel_err", "pass", "wall_s",
                           "cap_s"},
}


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=ROOT)


def test_dry_run_prints_every_key_and_every_part_passes():
    proc = _run("--dry-run", "--budget-s", "600")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["dry_run"] is True and out["device"] == "cpu"
    assert set(out) == {"dry_run", "device", "versions", "parts", "took_s"}
    for part, keys in KEYS.items():
        got = out["parts"][part]
        assert set(got) == keys, (part, set(got) ^ keys)
        assert got["status"] == "ok", got
    a = out["parts"]["colocated_vs_cpu"]
    assert a["pass"] and len(a["cpu_fp32_losses"]) == 2
    for run in ("gpu_fp32_runtime", "gpu_fp32_megatron", "gpu_bf16_megatron"):
        assert set(a[run]) == {"grad_reducer", "losses", "max_rel_err", "tol", "pass"}
    assert a["gpu_fp32_runtime"]["max_rel_err"] == 0.0  # the same device and reducer: the same numbers
    assert a["resume_runtime_ckpt_with_megatron"]["pass"]
    b = out["parts"]["throughput_vs_hf"]
    for side in ("ours", "hf_transformers"):
        assert set(b[side]) == {"step_s", "median_step_s", "tokens_per_s", "mfu"} and b[side]["tokens_per_s"] > 0
    assert b["model"]["step_flops"] > 0 and b["ours_over_hf_tokens_per_s"] > 0
    c = out["parts"]["heterogeneous_nccl"]
    assert c["pass"] and c["heterogeneous_losses"] == pytest.approx(c["colocated_losses"], rel=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip line is for machines without CUDA")
def test_without_cuda_a_plain_run_is_one_skip_line():
    proc = _run(timeout=120)
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skip:")


def test_a_part_past_its_cap_is_killed_and_reported():
    proc = _run("--dry-run", "--only", "c", "--budget-s", "8", timeout=120)  # cap 2 s: ranks cannot finish
    assert proc.returncode == 0, proc.stderr[-2000:]
    c = json.loads(proc.stdout)["parts"]["heterogeneous_nccl"]
    assert c["status"] == "timeout" and c["cap_s"] == 2.0
    assert c["wall_s"] < 10  # killed with its ranks, not waited for
