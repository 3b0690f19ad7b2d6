"""`torchrun --nproc-per-node N -m mimo_runtime.launch train TOPOLOGY` runs the job as N ranks."""

import os
import subprocess
import sys

from tests.launch.conftest import HETERO, REPO, STEPS, child_env, free_port


def test_torchrun_trains_every_step_with_finite_losses(torchrun_losses):
    assert len(torchrun_losses) == STEPS
    assert all(0.0 < loss < 20.0 for loss in torchrun_losses)
    assert torchrun_losses[-1] < torchrun_losses[0]


def test_torchrun_world_size_that_does_not_match_the_topology_is_one_error_line():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc-per-node", "2",
                           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                           "-m", "mimo_runtime.launch", "train", HETERO],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --nproc-per-node: torchrun started 2 ranks but the world size of {HETERO} is 3"], \
        proc.stderr[-3000:]


def test_a_rank_failing_under_torchrun_is_named_with_its_module():
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc-per-node", "3",
                           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                           "-m", "mimo_runtime.launch", "train", HETERO, "--steps", "2"],
                          cwd=REPO, env=child_env(MIMO_INJECT_FAULT="1:0:raise"), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode != 0
    assert "error: rank 1 (language stage 0) failed: RuntimeError: injected fault on rank 1" in proc.stderr, \
        proc.stderr[-3000:]
