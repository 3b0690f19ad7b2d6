"""A non-finite loss or gradient norm never reaches the optimizer: the run stops naming the step and
module, or skips the step with `train.skip_nonfinite: true` and counts it (MIMO_INJECT_NAN puts the NaN)."""

import math
import os
import subprocess
import sys

from mimo_runtime.train.nonfinite import NAN_ENV, first_nonfinite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_nan_gradient_stops_the_run_with_one_line_naming_step_and_module():
    env = dict(os.environ, PYTHONWARNINGS="ignore", **{NAN_ENV: "0:1:grad"})  # rank 0 holds images
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch.cli", "train", "topologies/vlm-2rank.yaml",
                           "--steps", "3"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1:] == [
        "error: step 2: non-finite gradient norm in module images (nan); the run stopped before the optimizer "
        "step (train.skip_nonfinite: true skips such steps instead)"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_skip_nonfinite_drops_the_step_counts_it_and_trains_on():
    from tests.metrics.test_metrics import two_rank_checks

    got = two_rank_checks()[0]["skip"]  # a NaN loss in step 2 (tests/metrics/rank_fns.py)
    assert [r["skipped_steps"] for r in got] == [0, 1, 1]
    assert math.isnan(got[1]["loss"]) and math.isfinite(got[0]["loss"]) and math.isfinite(got[2]["loss"])
    assert math.isfinite(got[2]["grad_norm"]) and set(got[2]["grad_norm_by_module"]) == {"images", "language"}


def test_the_loss_is_named_before_gradient_norms_and_modules_in_plan_order():
    assert first_nonfinite(1.0, {"images": 2.0, "language": 3.0}) is None
    assert first_nonfinite(math.nan, {"images": math.inf, "language": 3.0}) == ("loss", "language")
    assert first_nonfinite(1.0, {"images": 2.0, "audio": math.inf, "language": math.nan}) == ("gradient norm", "audio")
