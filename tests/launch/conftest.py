"""Shared fixtures for launcher tests, all on 127.0.0.1.

`ray_cluster`: one two-node Ray cluster for the tests of this package, started and stopped by PID
(stopped when the last of them ends, so its idle processes do not slow the tests after it). The head
node offers the custom resource `enc` (and runs the dashboard, for `ray job submit`); the second
node offers `llm`: a heterogeneous cluster on one machine.
`torchrun_losses`: the per-step losses of a torchrun run of the same topology, the reference the
Ray runs must equal.
"""

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Dict, List

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HETERO = "tests/launch/topologies/hetero-3rank.yaml"  # images needs `enc`, language needs `llm`
STEPS = 3
# The test cluster authenticates with its own token: the tests neither read nor depend on a token
# a local `ray.init()` may have left in ~/.ray/auth_token.
_TOKEN = secrets.token_hex(32)


@dataclass(frozen=True)
class RayCluster:
    address: str  # GCS, for `ray.init` / `mimo-run train --ray --address`
    dashboard: str  # http address, for `ray job submit --address`
    node_by_resource: Dict[str, str]  # "enc"/"llm" -> the node id that offers it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> Dict[str, str]:
    """The environment of a driver, rank or Ray node the tests start (megatron's CPU warnings muted)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MIMO_INJECT_FAULT")}
    return dict(env, PYTHONWARNINGS="ignore", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_TOKEN, **extra)


def _stop_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG),
    so a killed test run cannot leave a Ray cluster behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _start_node(args: List[str], log_path: str) -> subprocess.Popen:
    """`ray start --block ...`: it stays in the foreground and stops its processes on SIGTERM."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, os.path.join(HERE, "ray_start.py"), "start", "--block",
                                 "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 "--object-store-memory=100000000", *args],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
                                env=child_env(), preexec_fn=_stop_with_parent)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only processes this fixture started
            proc.wait()


def _wait(what: str, ready, procs, logs, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.3)
    tails = "\n".join(f"--- {log}\n{open(log).read()[-2000:]}" for log in logs if os.path.exists(log))
    raise RuntimeError(f"Ray cluster: {what} not ready\n{tails}")


def _nodes_by_resource(dashboard: str) -> Dict[str, str]:
    try:
        request = urllib.request.Request(f"{dashboard}/api/v0/nodes", headers={"Authorization": f"Bearer {_TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as r:
            nodes = json.load(r)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return {}
    alive = [n for n in nodes if n["state"] == "ALIVE"]
    found = {k: n["node_id"] for n in alive for k in ("enc", "llm") if k in n["resources_total"]}
    return found if len(found) == 2 else {}


def _leftovers(temp_dir: str):
    import psutil

    return [p for p in psutil.process_iter(["cmdline", "status"])
            if temp_dir in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="package")
def ray_cluster():
    temp_dir = tempfile.mkdtemp(prefix="mr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = free_port(), free_port()
    logs = [os.path.join(temp_dir, "head.log"), os.path.join(temp_dir, "llm.log")]
    nodes: List[subprocess.Popen] = []
    try:
        nodes.append(_start_node(
            ["--head", f"--port={port}", f"--temp-dir={temp_dir}", "--num-cpus=2", '--resources={"enc": 1}',
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"], logs[0]))
        # A node that joins before the head has finished starting can be refused (auth handshake).
        _wait("head", lambda: "Ray runtime started" in open(logs[0]).read(), nodes, logs)
        nodes.append(_start_node(
            [f"--address=127.0.0.1:{port}", "--num-cpus=2", '--resources={"llm": 2}',
             f"--dashboard-agent-listen-port={free_port()}"], logs[1]))
        dashboard = f"http://127.0.0.1:{dash}"
        by_resource = _wait("both nodes", lambda: _nodes_by_resource(dashboard), nodes, logs)
        yield RayCluster(f"127.0.0.1:{port}", dashboard, by_resource)
    finally:
        for proc in reversed(nodes):
            _stop(proc)
        for p in _leftovers(temp_dir):  # workers the raylets did not reap: ours, by their temp dir
            p.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def torchrun_losses(tmp_path_factory) -> List[float]:
    metrics = tmp_path_factory.mktemp("torchrun") / "metrics.jsonl"
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc-per-node", "3",
                           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                           "-m", "mimo_runtime.launch", "train", HETERO, "--steps", str(STEPS),
                           "--metrics", str(metrics)],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return losses_of(metrics.read_text())


def losses_of(jsonl: str) -> List[float]:
    records = [json.loads(line) for line in jsonl.splitlines() if line.strip()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]
