"""`pretrained: {format: checkpoint}`: one module's weights from a checkpoint of this runtime.

The checkpoint is the DCP directory train/checkpoint.py writes (a `step_N` directory, or the
--checkpoint-dir whose `latest` names one). Only the module's own ShardedTensors are requested,
so the load is partial by construction (other modules and optimizer state stay on disk), and DCP
reads exactly this rank's shard of each, whatever topology saved it (resharding). Keys are
megatron's sharded keys (`language_model.decoder.layers.mlp.linear_fc1.weight`, layers stacked);
`map` renames stored keys to them. Each load is a collective over the world: every rank joins it,
in topology order, with an empty request when it does not hold the module.
"""

import dataclasses
import os
from typing import Dict, List

from mimo_runtime.errors import TopologyError, UserError
from mimo_runtime.plan import Plan
from mimo_runtime.topology.schema import Pretrained
from mimo_runtime.train import checkpoint_state as cs
from mimo_runtime.train.checkpoint import agree_on_error, latest_checkpoint
from mimo_runtime.train.checkpoint_check import read_dcp_metadata
from mimo_runtime.train.params import module_prefix
from mimo_runtime.train.pretrained import hook, listing


def load_pretrained_checkpoints(model, plan: Plan, rank: int) -> None:
    import torch.distributed.checkpoint as dcp
    from megatron.core.dist_checkpointing.strategies.torch import MCoreLoadPlanner

    topo = plan.topology
    for name, m in topo.modules.items():
        spec = m.pretrained
        if spec is None or spec.format != "checkpoint":
            continue
        where = f"modules.{name}.pretrained"
        error, path, request = None, None, []
        try:
            path = _step_dir(spec, topo.source, where)
            if name in plan.modules_on(rank):
                request = _request(model, name, spec, read_dcp_metadata(path), topo.source, where)
        except UserError as e:
            error = str(e)
        agree_on_error(error)
        dcp.load(cs.to_dcp(request, loading=True), storage_reader=dcp.FileSystemReader(path),
                 planner=MCoreLoadPlanner())


def _step_dir(spec: Pretrained, src: str, where: str) -> str:
    if os.path.isfile(os.path.join(spec.path, ".metadata")):
        return spec.path
    found = latest_checkpoint(spec.path) if os.path.isdir(spec.path) else None
    if found is None:
        raise TopologyError(src, f"{where}.path", f"{spec.path} is neither a checkpoint nor a --checkpoint-dir "
                                                  "with a 'latest' checkpoint")
    return found


def _request(model, name: str, spec: Pretrained, metadata, src: str, where: str) -> List:
    """This rank's ShardedTensors of module `name`, keyed as stored; checks names and global shapes."""
    saved = metadata.state_dict_metadata
    stored_key = _stored_keys(saved, spec, src, where)
    prefix = module_prefix(name)
    mine = [t for t in cs.expand(cs.model_tensors(model)) if t.key.startswith(prefix)]
    missing = sorted({t.key[len(prefix):] for t in mine if t.key not in stored_key})
    shapes = sorted({f"{t.key[len(prefix):]}: checkpoint {tuple(saved[stored_key[t.key]].size)} vs model "
                     f"{tuple(t.global_shape)}" for t in mine if t.key in stored_key
                     and tuple(saved[stored_key[t.key]].size) != tuple(t.global_shape)})
    problems = [listing("shape mismatch" + ("es" if len(shapes) > 1 else ""), shapes)]
    if spec.strict:
        problems.append(listing("missing key" + ("s" if len(missing) > 1 else ""), missing))
    problems = [p for p in problems if p]
    if problems:
        raise TopologyError(src, where, f"{spec.path}: " + "; ".join(problems))
    return [dataclasses.replace(t, key=stored_key[t.key]) for t in mine if t.key in stored_key]


def _stored_keys(saved, spec: Pretrained, src: str, where: str) -> Dict[str, str]:
    """{model key: stored key} over the checkpoint's tensors (optimizer state left out)."""
    fn = hook(spec, src, where) if spec.map else (lambda k: k)
    out: Dict[str, str] = {}
    for key, md in saved.items():
        if key.startswith(cs.OPTIMIZER_PREFIX) or not hasattr(md, "chunks"):
            continue
        new = fn(key)
        if new is None:
            continue
        if new in out:
            raise TopologyError(src, f"{where}.map", f"{spec.map} maps two stored keys to '{new}'")
        out[new] = key
    return out
