"""Two torchrun agents (`--nnodes 2`, 2 ranks each, c10d rendezvous on 127.0.0.1) run one 4-rank job
with the colocated single-process run's losses, as two machines would: each agent is started by the
recipe users run on every node, examples/multinode/torchrun_node.sh."""

import os
import signal
import subprocess
import sys

import torch

from mimo_runtime.topology import load_topology
from tests.launch.conftest import REPO, child_env, free_port, losses_of
from tests.train.equivalence import SEED, STEPS, reference

TOPOLOGY = "tests/launch/topologies/two-node-4rank.yaml"


def _agent(port: int, metrics: str, log) -> subprocess.Popen:
    env = child_env(PYTHON=sys.executable, NNODES="2", NPROC_PER_NODE="2", RDZV="c10d", RDZV_ID="two-node-test",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_ADDR="127.0.0.1")
    return subprocess.Popen(["examples/multinode/torchrun_node.sh", TOPOLOGY, "--steps", str(STEPS),
                             "--seed", str(SEED), "--metrics", metrics],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)  # its own group: a timed-out agent goes with its ranks


def test_two_torchrun_agents_on_loopback_train_with_the_colocated_losses(tmp_path):
    metrics, port = str(tmp_path / "metrics.jsonl"), free_port()
    logs = [open(tmp_path / f"agent{i}.log", "w") for i in range(2)]  # files: a full pipe would block an agent
    agents = [_agent(port, metrics, log) for log in logs]
    try:
        for a in agents:
            a.wait(timeout=300)
    finally:
        for a in agents:
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
        for log in logs:
            log.close()
    tails = "\n".join((tmp_path / f"agent{i}.log").read_text()[-3000:] for i in range(2))
    assert [a.returncode for a in agents] == [0, 0], tails
    got = losses_of(open(metrics).read())
    want = [m["loss"] for m in reference(load_topology(TOPOLOGY)).metrics]
    assert len(got) == STEPS
    assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=0), (got, want)
