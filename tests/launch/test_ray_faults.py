"""A rank's actor dying mid-training: named within 60 s and the job stops; with restarts it resumes
from its checkpoint and finishes with the uninterrupted losses. The fault is injected through
MIMO_INJECT_FAULT (rank 2's process exits inside a given step), so its timing does not depend on
the machine's speed."""

import re
import subprocess
import sys
import threading
import time

import psutil

from tests.launch.conftest import HETERO, REPO, STEPS, child_env, losses_of

DRIVER_LIMIT_S = 300  # a driver still running by then has hung: it is killed and the test fails


def _train_on_ray(cluster, fault: str, *extra: str):
    """Run `mimo-run train --ray`, timing when rank 2's process dies and when the driver names it."""
    cmd = [sys.executable, "-m", "mimo_runtime.launch", "train", HETERO, "--ray", "--address", cluster.address,
           "--steps", str(STEPS), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(MIMO_INJECT_FAULT=fault), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, bufsize=1)
    lines, times, pids = [], {}, {}
    limit = threading.Timer(DRIVER_LIMIT_S, proc.kill)
    limit.start()
    for line in proc.stderr:
        lines.append(line)
        found = re.match(r"rank (\d) \(.*\) on node \w+ 127\.0\.0\.1 pid (\d+)", line)
        if found and int(found.group(1)) not in pids:  # the first attempt's processes
            pids[int(found.group(1))] = int(found.group(2))
            if found.group(1) == "2":
                threading.Thread(target=_time_death, args=(pids[2], times), daemon=True).start()
        if "rank 2 (language stage 0) died" in line and "named" not in times:
            times["named"] = time.monotonic()
    proc.wait()
    limit.cancel()
    return proc.returncode, "".join(lines), times, pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _time_death(pid: int, times: dict) -> None:
    while _alive(pid):
        time.sleep(0.02)
    times["died"] = time.monotonic()


def test_a_dead_actor_is_named_within_60_s_and_the_job_stops(ray_cluster):
    code, err, times, pids = _train_on_ray(ray_cluster, "2:0:exit")  # rank 2 (language, `llm` node) exits in step 1
    assert code == 1, err[-4000:]
    assert err.splitlines()[-1].startswith("error: rank 2 (language stage 0) died: its Ray actor process exited"), \
        err[-4000:]
    latency = times["named"] - times["died"]
    print(f"failure named {latency:.2f} s after the actor died")
    assert 0 <= latency < 60
    assert sorted(pids) == [0, 1, 2] and not any(_alive(pid) for pid in pids.values())  # the rest were stopped


def test_with_restarts_the_job_resumes_from_its_checkpoint_with_the_uninterrupted_losses(
        ray_cluster, torchrun_losses, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    code, err, _, _ = _train_on_ray(ray_cluster, "2:1:exit", "--max-restarts", "1", "--metrics", str(metrics),
                                 "--checkpoint-dir", str(tmp_path / "ckpt"), "--save-every", "1")
    assert code == 0, err[-4000:]
    assert "ray: attempt 1/2 failed: rank 2 (language stage 0) died" in err
    assert "ray: restarting every rank from the latest checkpoint in" in err
    assert "ray: the last attempt resumed from the checkpoint of step 1" in err  # rank 2 died in step 2
    assert losses_of(metrics.read_text()) == torchrun_losses
