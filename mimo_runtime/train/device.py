"""Which device a run computes on, and how a rank joins the process group for it.

`--device auto|cpu|cuda` (or `train.device`) is resolved once, by the launcher, to "cpu" or "cuda"
so every rank of a job agrees (auto: CUDA when this machine has it; under Ray, where the driver
may have no GPU, when a module's `resources` ask for GPUs). A CUDA rank binds its GPU before
anything touches CUDA (LOCAL_RANK under torchrun and the local spawner; a Ray actor sees only the
GPU Ray assigned it, as `cuda:0`) and joins with NCCL initialized eagerly (`device_id`): a first
batched P2P call on a lazily created communicator must include every rank of its group, which a
pipeline's sends never do. The process group is `cpu:gloo,cuda:nccl`: bulk tensors live on the GPU
and travel over NCCL, while the host-side scalars the trainer reduces (loss sums, norms, timings)
and the P2P shape headers stay on CPU and travel over gloo, so neither path pays a device sync per
number.
"""

import os
from datetime import timedelta
from typing import Optional

from mimo_runtime.errors import ArgumentError, TopologyError

DEVICES = ("auto", "cpu", "cuda")
CUDA_BACKEND = "cpu:gloo,cuda:nccl"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str, flag: Optional[str], source: str = "", wants_gpus: Optional[bool] = None) -> str:
    """"cpu" or "cuda" for `requested`; `flag` names the command-line flag that gave it (None: the
    topology's `train.device` in `source`). `wants_gpus` is given under Ray: the driver cannot see
    the workers' GPUs, so auto follows the topology's resources and cuda is not checked here."""
    if requested not in DEVICES:
        raise _error(flag, source, f"expected one of {', '.join(DEVICES)}, got {requested!r}")
    if wants_gpus is not None:
        return requested if requested != "auto" else ("cuda" if wants_gpus else "cpu")
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise _error(flag, source, "CUDA is not available on this machine (torch.cuda.is_available() is False); "
                                   "use --device cpu, or auto to pick CUDA only where it exists")
    return requested


def _error(flag: Optional[str], source: str, message: str):
    return ArgumentError(flag, message) if flag else TopologyError(source, "train.device", message)


def _gpus(module) -> float:
    return float((module.resources or {}).get("GPU", 0))


def topology_wants_gpus(topology) -> bool:
    return any(_gpus(m) > 0 for m in topology.modules.values())


def modules_without_gpus(topology) -> list:
    """Modules that reserve no GPU (`resources: {GPU: n}`), in file order."""
    return [name for name, m in topology.modules.items() if not _gpus(m) > 0]


def backend_for(device: str) -> str:
    return CUDA_BACKEND if device == "cuda" else "gloo"


def bind_gpu(gpu: Optional[int] = None):
    """Make this process's GPU current: `gpu`, else LOCAL_RANK. Returns it as a torch.device."""
    import torch

    index = int(os.environ.get("LOCAL_RANK", "0")) if gpu is None else gpu
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"local rank {index} has no GPU: this node shows {torch.cuda.device_count()} "
                           f"(one GPU per rank; start at most that many ranks per node)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_process_group(timeout_s: float, device: str = "cpu", gpu: Optional[int] = None) -> None:
    """Join from RANK/WORLD_SIZE/MASTER_*: gloo on CPU; on CUDA bind the GPU first, then NCCL eagerly."""
    import torch.distributed as dist

    kwargs = dict(timeout=timedelta(seconds=timeout_s), rank=int(os.environ["RANK"]),
                  world_size=int(os.environ["WORLD_SIZE"]))
    if device == "cuda":
        kwargs["device_id"] = bind_gpu(gpu)
    dist.init_process_group(backend_for(device), **kwargs)


def run_device(device: str):
    """The torch.device a rank's model lives on after `init_process_group(device=...)`."""
    import torch

    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_grad_reducer(requested: str, device: str, source: str) -> str:
    """"runtime" or "megatron" for `train.grad_reducer` on `device`.

    megatron-core 0.16.1's DistributedDataParallel allocates its param/grad buffers with
    `device=torch.cuda.current_device()` (distributed/param_and_grad_buffer.py) and its distributed
    optimizer shards those buffers, so the megatron path needs CUDA; CPU runs keep the runtime's
    reducer (train/grads.py), which computes the same gradients (DESIGN "Semantics").
    """
    if requested == "megatron" and device != "cuda":
        raise TopologyError(source, "train.grad_reducer",
                            "megatron's DistributedDataParallel and distributed optimizer allocate their buffers "
                            "on CUDA; this run is on cpu (use runtime, or auto, on CPU)")
    if requested == "auto":
        return "megatron" if device == "cuda" else "runtime"
    return requested
