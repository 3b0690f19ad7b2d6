"""`--device` / `train.device` and how a rank joins for CUDA, checked on a CPU machine: the CLI's
errors, auto's resolution per launcher, and (with torch.cuda and init_process_group recorded, not
run) that a CUDA rank binds its GPU before joining over NCCL with `device_id`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mimo_runtime.errors import ArgumentError, TopologyError
from mimo_runtime.launch.cli import build_parser, main
from mimo_runtime.launch.commands.train import run_config
from mimo_runtime.topology import load_topology
from mimo_runtime.train import device as device_mod
from mimo_runtime.train.device import init_process_group, resolve_device, resolve_grad_reducer

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = str(ROOT / "topologies" / "vlm-2rank.yaml")
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="the error is for machines without CUDA")
def test_device_cuda_without_cuda_is_one_error_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train", TOPOLOGY, "--device", "cuda"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device: CUDA is not available"), proc.stderr


def test_train_device_cuda_in_the_file_names_the_file_and_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(device_mod, "cuda_available", lambda: False)
    path = tmp_path / "t.yaml"
    path.write_text("modules: {images: {kind: encoder}, language: {kind: language}}\ntrain: {device: cuda}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: train.device: CUDA is not available on this machine "
                   f"(torch.cuda.is_available() is False); use --device cpu, or auto to pick CUDA only where it exists"]


def test_a_bad_train_device_is_a_schema_error(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("modules: {language: {kind: language}}\ntrain: {device: tpu}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: train.device:") and "tpu" in err[0]


def test_auto_is_cuda_exactly_where_cuda_is(monkeypatch):
    for available, want in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(device_mod, "cuda_available", lambda: available)
        assert resolve_device("auto", "--device") == want
        assert resolve_device("cpu", "--device") == "cpu"
    with pytest.raises(ArgumentError, match="^--device: CUDA is not available"):
        resolve_device("cuda", "--device")


def test_under_ray_auto_follows_the_topologys_gpu_resources(monkeypatch):
    """The driver may have no GPU while its workers do: nothing is probed on the driver."""
    monkeypatch.setattr(device_mod, "cuda_available", lambda: pytest.fail("probed the driver's CUDA"))
    assert resolve_device("auto", None, "t.yaml", wants_gpus=True) == "cuda"
    assert resolve_device("auto", None, "t.yaml", wants_gpus=False) == "cpu"
    assert resolve_device("cuda", "--device", wants_gpus=False) == "cuda"
    topo = load_topology(TOPOLOGY, ["modules.language.resources={GPU: 1}"])
    assert device_mod.topology_wants_gpus(topo) and not device_mod.topology_wants_gpus(load_topology(TOPOLOGY))


def test_cuda_under_ray_needs_a_gpu_bundle_for_every_module():
    half = ["modules.language.resources={GPU: 1}"]
    args = build_parser().parse_args(["train", TOPOLOGY, "--ray", "--device", "cuda"])
    with pytest.raises(ArgumentError, match=r"^--device: cuda under Ray needs a GPU per rank: give modules \['images'\]"):
        run_config(args, load_topology(TOPOLOGY, half))
    both = half + ["modules.images.resources={GPU: 1}"]
    assert run_config(args, load_topology(TOPOLOGY, both)).device == "cuda"
    auto = build_parser().parse_args(["train", TOPOLOGY, "--ray"])
    assert run_config(auto, load_topology(TOPOLOGY)).device == "cpu"


def test_run_config_carries_the_resolved_device_and_reducer(monkeypatch):
    monkeypatch.setattr(device_mod, "cuda_available", lambda: False)
    args = build_parser().parse_args(["train", TOPOLOGY])
    cfg = run_config(args, load_topology(TOPOLOGY))
    assert (cfg.device, cfg.grad_reducer) == ("cpu", "runtime")
    monkeypatch.setattr(device_mod, "cuda_available", lambda: True)
    cfg = run_config(args, load_topology(TOPOLOGY))
    assert (cfg.device, cfg.grad_reducer) == ("cuda", "megatron")
    cfg = run_config(build_parser().parse_args(["train", TOPOLOGY, "--device", "cpu"]), load_topology(TOPOLOGY))
    assert (cfg.device, cfg.grad_reducer) == ("cpu", "runtime")


def test_megatron_reducer_on_cpu_is_a_topology_error():
    with pytest.raises(TopologyError, match="t.yaml: train.grad_reducer: megatron's DistributedDataParallel"):
        resolve_grad_reducer("megatron", "cpu", "t.yaml")
    assert resolve_grad_reducer("runtime", "cuda", "t.yaml") == "runtime"
    assert resolve_grad_reducer("megatron", "cuda", "t.yaml") == "megatron"


@pytest.fixture
def recorded_cuda(monkeypatch):
    """torch.cuda and init_process_group recorded: what a CUDA rank would call, in order."""
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend, kw)))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    return calls


def test_a_cuda_rank_binds_local_rank_then_joins_nccl_eagerly(recorded_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    init_process_group(30.0, "cuda")
    assert recorded_cuda[0] == ("set_device", 2)
    _, backend, kw = recorded_cuda[1]
    assert backend == "cpu:gloo,cuda:nccl"
    assert kw["device_id"] == torch.device("cuda", 2) and (kw["rank"], kw["world_size"]) == (3, 4)
    assert kw["timeout"].total_seconds() == 30.0


def test_a_ray_actor_uses_the_one_gpu_it_sees(recorded_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")  # its index among the node's actors, not a visible GPU
    init_process_group(30.0, "cuda", gpu=0)
    assert recorded_cuda[0] == ("set_device", 0) and recorded_cuda[1][2]["device_id"] == torch.device("cuda", 0)


def test_more_ranks_than_gpus_on_a_node_is_named(recorded_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(RuntimeError, match="local rank 4 has no GPU: this node shows 4"):
        init_process_group(30.0, "cuda")
    assert recorded_cuda == []


def test_a_cpu_rank_joins_gloo_without_device_id(recorded_cuda):
    init_process_group(30.0, "cpu")
    assert recorded_cuda == [("init", "gloo", recorded_cuda[0][2])] and "device_id" not in recorded_cuda[0][2]
