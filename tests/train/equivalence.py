"""Shared harness: run a topology on real gloo processes and compare with the single-process reference."""

import functools
from typing import Dict, List

import torch

from mimo_runtime.launch.local import launch_local
from mimo_runtime.topology import Topology, topology_from_dict
from mimo_runtime.train.loop import RankResult, RunConfig

STEPS = 3
SEED = 7


def topology(model: str, modules: Dict, placement: str = "separate", **train) -> Topology:
    t = {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}
    t.update(train)
    return topology_from_dict({"model": model, "modules": modules, "train": t, "placement": placement},
                              source="<test>")


def run(topo: Topology, colocated: bool = False, nproc: int = 1, **cfg) -> List[RankResult]:
    config = RunConfig(steps=cfg.pop("steps", STEPS), seed=SEED, colocated=colocated,
                       nproc=nproc if colocated else topo.world_size, timeout_s=30, progress=False,
                       capture_grads_step=0, **cfg)
    return launch_local(topo, config, timeout_s=240)


@functools.lru_cache(maxsize=None)
def _reference_cached(key):
    return run(_REFERENCE_TOPOLOGIES[key], colocated=True, nproc=1)[0]


_REFERENCE_TOPOLOGIES: Dict[str, Topology] = {}


def reference(topo: Topology) -> RankResult:
    """The colocated single-process run of the same model and data, computed once per model/batch/frozen set."""
    key = (topo.model, topo.train.global_batch, tuple(sorted((n, m.frozen, m.freeze) for n, m in topo.modules.items())))
    _REFERENCE_TOPOLOGIES.setdefault(key, topo)
    return _reference_cached(key)


def shard_of(full: torch.Tensor, dim, tp_rank: int, tp_size: int) -> torch.Tensor:
    if dim is None or tp_size == 1:
        return full
    return full.chunk(tp_size, dim=dim)[tp_rank]


def assert_matches_reference(topo: Topology, results: List[RankResult], ref: RankResult) -> None:
    want = [m["loss"] for m in ref.metrics]
    got = [m["loss"] for m in results[0].metrics]
    assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=0), (got, want)
    seen = set()
    for rank, res in enumerate(results):
        for name, (grad, dim, tp_rank, tp_size) in res.grads.items():
            ref_grad = ref.grads[name][0]
            seen.add(name)
            if ref_grad is None:
                assert grad is None, f"rank {rank}: {name} has a gradient but the reference has none"
                continue
            assert grad is not None, f"rank {rank}: {name} has no gradient"
            expected = shard_of(ref_grad, dim, tp_rank, tp_size)
            assert grad.shape == expected.shape, (rank, name, grad.shape, expected.shape)
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6, msg=lambda m: f"rank {rank} {name}: {m}")
    missing = set(ref.grads) - seen
    assert not missing, f"parameters held by no rank: {sorted(missing)[:5]}"
