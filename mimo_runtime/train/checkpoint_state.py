"""What a checkpoint holds, as megatron ShardedTensors, so every part of it reshards.

- The model: `MimoModel.sharded_state_dict()` (global keys and offsets whatever the topology).
  A gated MLP's fc1 comes as megatron's ShardedTensorFactory (`apply_swiglu_sharded_factory`):
  its local `[gate shard; up shard]` is saved as two shards of the global `[gate; up]`, so a
  TP=2 SwiGLU checkpoint loads into TP=1 (and back). The factory is kept as it is until the
  tensors go to DCP (`expand`), so the optimizer state of its parameter is split the same way.
- The optimizer: every per-parameter state tensor (AdamW's exp_avg / exp_avg_sq, SGD's
  momentum_buffer) is saved as `optimizer.<parameter key>.<state name>` with exactly its
  parameter's sharding (global shape, offsets, replica id), so a TP=2 moment loads into a TP=1
  model the same way the parameter does. Scalar state (AdamW's `step`) is the same for every
  parameter of a module's optimizer; it goes into the checkpoint's JSON per module.
- RNG: each rank's torch / Python / NumPy generator state, in a small per-rank file.
The data position needs nothing more than the step: the sampler is a pure function of
(seed, step), so a run resumed at step k draws exactly the batches k, k+1, ... it would have.
"""

import dataclasses
import random
from typing import Dict, List, Tuple

import numpy as np
import torch

OPTIMIZER_PREFIX = "optimizer."


def _sharded_types():
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    return ShardedTensor, ShardedTensorFactory


def model_tensors(model) -> List:
    """This rank's model ShardedTensors and ShardedTensorFactories (one per parameter each).
    ShardedObjects (transformer-engine `_extra_state`, empty without TE) are left out: they are
    per-rank blobs that cannot be resharded."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    return [v for v in nested_values(model.sharded_state_dict()) if isinstance(v, _sharded_types())]


def expand(tensors) -> List:
    """Factories built into the ShardedTensors they stand for (views of their data: a load
    fills the parameter in place, so the factory's merge is not needed)."""
    _, factory = _sharded_types()
    out = []
    for t in tensors:
        out.extend(t.build() if isinstance(t, factory) else [t])
    return out


def _by_parameter(tensors) -> Dict[int, object]:
    return {id(t.data): t for t in tensors}


def _optimizer_params(optimizer):
    for group in optimizer.param_groups:
        yield from group["params"]


def optimizer_tensors(tensors, optimizers: Dict[str, torch.optim.Optimizer]) -> List:
    """Every tensor-valued optimizer state entry, sharded like its parameter (for saving)."""
    by_param = _by_parameter(tensors)
    out = []
    for opt in optimizers.values():
        for p in _optimizer_params(opt):
            sh = by_param[id(p)]
            for name, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.dim() > 0:
                    out.append(_mirror(sh, name, value))
    return out


def _mirror(sh, name: str, value: torch.Tensor):
    """`value` (an optimizer state of sh's parameter) sharded like the parameter, under its own key."""
    key = f"{OPTIMIZER_PREFIX}{sh.key}.{name}"
    if isinstance(sh, _sharded_types()[1]):
        return dataclasses.replace(sh, key=key, data=value)  # the factory splits it as it splits the weight
    return dataclasses.replace(sh, key=key, data=value, dtype=value.dtype)


def optimizer_scalars(optimizers: Dict[str, torch.optim.Optimizer]) -> Dict[str, Dict[str, float]]:
    """{module: {state name: value}} for scalar state (AdamW's step), which every parameter of a
    module shares because each step updates all of them."""
    out: Dict[str, Dict[str, float]] = {}
    for module, opt in optimizers.items():
        for p in _optimizer_params(opt):
            for name, value in opt.state.get(p, {}).items():
                if (torch.is_tensor(value) and value.dim() == 0) or isinstance(value, (int, float)):
                    v = float(value)
                    seen = out.setdefault(module, {}).setdefault(name, v)
                    if seen != v:
                        raise RuntimeError(f"optimizer of '{module}': parameters disagree on '{name}' "
                                           f"({seen} vs {v}); mimo checkpoints keep one value per module")
    return out


def optimizer_tensors_to_load(tensors, optimizers, saved_names: Dict[str, List[str]],
                              scalars: Dict[str, Dict[str, float]]) -> List:
    """Create the optimizer state a checkpoint holds (zeros, filled in place by the load) and
    return it as ShardedTensors. `saved_names`: optimizer key prefix -> state names in the checkpoint."""
    by_param = _by_parameter(tensors)
    out = []
    for module, opt in optimizers.items():
        for p in _optimizer_params(opt):
            sh = by_param[id(p)]
            names = saved_names.get(f"{OPTIMIZER_PREFIX}{sh.key}", [])
            if not names:
                continue
            state = opt.state[p]
            for name, value in scalars.get(module, {}).items():
                state[name] = torch.tensor(value, dtype=torch.float32)
            for name in names:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
                out.append(_mirror(sh, name, state[name]))
    return out


def saved_state_names(keys) -> Dict[str, List[str]]:
    """'optimizer.<key>.<name>' keys of a checkpoint -> {'optimizer.<key>': [names]}."""
    out: Dict[str, List[str]] = {}
    for k in keys:
        if k.startswith(OPTIMIZER_PREFIX):
            head, _, name = k.rpartition(".")
            out.setdefault(head, []).append(name)
    return out


def main_replicas(tensors) -> List:
    """Only the main replica of each shard is written (DP copies and tied-embedding copies are equal)."""
    from megatron.core.dist_checkpointing.mapping import is_main_replica

    return [t for t in expand(tensors) if is_main_replica(t.replica_id)]


def to_dcp(tensors, loading: bool) -> Dict:
    """{key: [ShardedTensor, ...]} (a key holds several shards when layers are stacked) -> DCP's form."""
    from megatron.core.dist_checkpointing.strategies.torch import mcore_to_pyt_state_dict

    grouped: Dict[str, List] = {}
    for t in expand(tensors):
        grouped.setdefault(t.key, []).append(t)
    return mcore_to_pyt_state_dict(grouped, is_loading=loading)


def rng_state() -> Dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def global_shapes(tensors) -> Dict[str, Tuple[int, ...]]:
    return {t.key: tuple(t.global_shape) for t in expand(tensors)}
