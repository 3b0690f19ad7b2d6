"""Checkpoints that resume on any topology, written atomically (torch.distributed.checkpoint).

Layout of --checkpoint-dir (on several nodes it must be storage every node shares):

    step_00000006/   one complete checkpoint: DCP shard files (__<rank>_0.distcp) and .metadata,
                     mimo.json (step, model, seed, optimizer scalars, the topology it was saved on),
                     topology.yaml (that topology resolved: every default filled in), rng/rank<r>.pt
    latest           the name of the newest complete checkpoint
    .tmp-step_N/     a save in progress, or one a crash interrupted (the next save removes it)

A save writes everything into .tmp-step_N, renames it to step_N once every rank's shards are on
disk, then replaces `latest` (write a temp file, os.replace), then keeps the newest K. A process
killed at any point leaves `latest` naming a complete checkpoint. megatron's torch_dist strategy
calls torch.cuda in 0.16.1, so this drives DCP directly with megatron's planners.
"""

import json
import os
import shutil
from typing import Dict, Optional

import torch
import torch.distributed as dist

from mimo_runtime.errors import UserError
from mimo_runtime.topology import resolved_yaml
from mimo_runtime.train import checkpoint_state as cs
from mimo_runtime.train.checkpoint_check import (META_FILE, CheckpointError, check_files, check_run, check_tensors,
                                                 read_dcp_metadata, read_meta)

LATEST = "latest"
TOPOLOGY_FILE = "topology.yaml"  # the run's resolved topology: `mimo-run train` can rerun it as is
CRASH_ENV = "MIMO_CHECKPOINT_CRASH"  # tests: "RANK:STEP" kills that rank after its shards, before the rename


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _steps(root: str) -> Dict[int, str]:
    out = {}
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name.startswith("step_") and name[5:].isdigit():
            out[int(name[5:])] = name
    return out


def latest_checkpoint(root: str) -> Optional[str]:
    """The directory `latest` names, or None when `root` holds no checkpoint yet."""
    marker = os.path.join(root, LATEST)
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        name = f.read().strip()
    path = os.path.join(root, name)
    if not os.path.isdir(path):
        raise CheckpointError(root, f"'{LATEST}' names {name!r}, which does not exist; "
                                    f"point it at one of {sorted(_steps(root).values()) or 'no checkpoints'}")
    return path


# ---- save ----
def save_checkpoint(rt, root: str, step: int, keep_last: int) -> str:
    """Collective: every rank writes its shards; rank 0 commits. `step` = optimizer steps done."""
    rank = dist.get_rank()
    name = checkpoint_name(step)
    tmp, final = os.path.join(root, ".tmp-" + name), os.path.join(root, name)
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        _remove_leftovers(root)
        os.makedirs(os.path.join(tmp, "rng"))
    dist.barrier()
    _write_shards(rt, tmp)
    torch.save(cs.rng_state(), os.path.join(tmp, "rng", f"rank{rank}.pt"))
    scalars = _gather_scalars(rt.optimizers)
    _crash_hook(rank, step)
    dist.barrier()  # every rank's files are on disk
    if rank == 0:
        _write_json(os.path.join(tmp, META_FILE), _meta(rt, step, scalars))
        with open(os.path.join(tmp, TOPOLOGY_FILE), "w", encoding="utf-8") as f:
            f.write(resolved_yaml(rt.topology))
        _commit(root, tmp, final)
        _prune(root, keep_last)
    dist.barrier()
    return final


def _write_shards(rt, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner

    tensors = cs.model_tensors(rt.model)
    _each_optimizer(rt, "gather_state")  # megatron's distributed optimizer: full tensors (train/megatron_ddp.py)
    state = cs.main_replicas(tensors + cs.optimizer_tensors(tensors, rt.optimizers))
    dcp.save(cs.to_dcp(state, loading=False), storage_writer=dcp.FileSystemWriter(path),
             planner=MCoreSavePlanner(flatten_state_dict=False))


def _each_optimizer(rt, method: str) -> None:
    """Call `method` on every optimizer that has it (the megatron path's TorchView); a no-op for torch.optim."""
    for opt in rt.optimizers.values():
        if hasattr(opt, method):
            getattr(opt, method)()


def _gather_scalars(optimizers) -> Dict[str, Dict[str, float]]:
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, cs.optimizer_scalars(optimizers))
    merged: Dict[str, Dict[str, float]] = {}
    for part in parts:
        for module, values in part.items():
            merged.setdefault(module, {}).update(values)
    return merged


def _meta(rt, step: int, scalars) -> Dict:
    plan = rt.plan
    return {"format": 1, "step": step, "model": rt.topology.model_name, "seed": rt.cfg.seed,
            "optimizer_scalars": scalars, **({"data": rt.feeder.data_position(step)} if rt.feeder else {}),
            "saved_on": {"topology": rt.topology.name, "world_size": dist.get_world_size(),
                         "colocated": rt.cfg.colocated,
                         "modules": {n: {"tp": m.tp, "cp": m.cp, "dp": m.dp, "pp": m.pp}
                                     for n, m in plan.modules.items()}}}


def _commit(root: str, tmp: str, final: str) -> None:
    old = None
    if os.path.exists(final):  # the same step saved again after a restart from an earlier one
        old = os.path.join(root, ".old-" + os.path.basename(final))
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(root)
    marker = os.path.join(root, LATEST)
    with open(marker + ".tmp", "w") as f:
        f.write(os.path.basename(final) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(marker + ".tmp", marker)
    _fsync_dir(root)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _prune(root: str, keep_last: int) -> None:
    if keep_last <= 0:
        return
    steps = _steps(root)
    for s in sorted(steps)[:-keep_last]:
        shutil.rmtree(os.path.join(root, steps[s]), ignore_errors=True)


def _remove_leftovers(root: str) -> None:
    for name in os.listdir(root):
        if name.startswith((".tmp-", ".old-")):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _write_json(path: str, obj: Dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crash_hook(rank: int, step: int) -> None:
    spec = os.environ.get(CRASH_ENV)
    if spec and [int(x) for x in spec.split(":")] == [rank, step]:
        os._exit(17)


# ---- load ----
def load_checkpoint(rt, root: str) -> Optional[Dict]:
    """Collective: fill the model, optimizer state and RNG from `latest` in `root`; returns the
    checkpoint's mimo.json (its "step" is where training resumes), or None when there is none."""
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.strategies.torch import MCoreLoadPlanner

    error, path, meta, tensors = None, None, None, None
    try:
        path = latest_checkpoint(root)
        if path is not None:
            meta, tensors = _prepare(rt, path)
    except UserError as e:
        error = str(e)
    agree_on_error(error)
    if path is None:
        return None
    try:
        dcp.load(cs.to_dcp(tensors, loading=True), storage_reader=dcp.FileSystemReader(path),
                 planner=MCoreLoadPlanner())
    except Exception as e:  # noqa: BLE001 - DCP wraps every rank's read failure; name the checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"reading the shards failed ({first}): the checkpoint is corrupt") from None
    _restore_rng(path, dist.get_rank())
    _each_optimizer(rt, "scatter_state")  # the loaded full state -> each rank's slices (megatron path)
    return meta


def _prepare(rt, path: str):
    meta = read_meta(path)
    check_run(path, meta, rt.topology.model_name, rt.cfg.seed)
    if rt.feeder is not None and "data" in meta and rt.feeder.position_mismatch(meta["data"]):
        raise CheckpointError(path, rt.feeder.position_mismatch(meta["data"]))
    metadata = read_dcp_metadata(path)
    check_files(path, metadata)
    tensors = cs.model_tensors(rt.model)
    names = cs.saved_state_names(metadata.state_dict_metadata)
    opt = cs.optimizer_tensors_to_load(tensors, rt.optimizers, names, meta.get("optimizer_scalars", {}))
    check_tensors(path, metadata, cs.global_shapes(tensors + opt))
    return meta, tensors + opt


def agree_on_error(error: Optional[str]) -> None:
    """Every rank raises the same error (the first rank's), so none waits in DCP's collectives."""
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e), None)
    if first:
        raise UserError(first)


def _restore_rng(path: str, rank: int) -> None:
    """This rank's generators if it existed when saving, else rank 0's (a larger world now)."""
    own = os.path.join(path, "rng", f"rank{rank}.pt")
    file = own if os.path.isfile(own) else os.path.join(path, "rng", "rank0.pt")
    if os.path.isfile(file):
        cs.set_rng_state(torch.load(file, weights_only=False))
