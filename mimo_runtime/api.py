"""Python API for your own loop: `mimo_runtime.Runtime` (one rank) and `mimo_runtime.launch` (all ranks).

    def main(path):
        rt = mimo_runtime.Runtime(path)              # this rank: plan, role, groups, model, optimizers
        for batch in my_batches():                    # the same global batch on every rank
            metrics = rt.train_step(batch)            # {'step', 'loss', 'grad_norm', 'lr', ...}
        return rt.eval_step()["loss"]

    if __name__ == "__main__":
        losses = mimo_runtime.launch("topology.yaml", main, args=("topology.yaml",))

Docs with a complete example: docs/python_api.md. `Runtime` wraps `mimo_runtime.train.runtime.Runtime`
(the object `mimo-run train` uses), so a custom loop trains exactly what the CLI trains.
"""

import collections.abc
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from mimo_runtime.factories import preflight
from mimo_runtime.topology import Topology, load_topology

TopologyLike = Union[str, os.PathLike, Topology]
Batch = Union[None, Sequence[Any], Iterator[Sequence[Any]]]


def _topology(topology: TopologyLike) -> Topology:
    return topology if isinstance(topology, Topology) else load_topology(os.fspath(topology))


class Runtime:
    """This rank's share of a run. Needs the process group (`launch`, torchrun or Ray start it;
    without one it is joined from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT).

    Attributes: topology, plan, rank, world_size, role (RankRole: the modules this rank holds and
    its stage of each), groups ({module: grid + ProcessGroupCollection}), model (a MimoModel with
    only this rank's modules), optimizers, step (train steps done).
    """

    def __init__(self, topology: TopologyLike, *, seed: Optional[int] = None, colocated: bool = False,
                 schedule: Optional[str] = None, timeout_s: Optional[float] = None, device: Optional[str] = None):
        import torch.distributed as dist

        from mimo_runtime.train.device import resolve_device, resolve_grad_reducer

        from mimo_runtime.launch.spawn import init_distributed
        from mimo_runtime.train.config import RunConfig
        from mimo_runtime.train.runtime import Runtime as RankRuntime

        self.topology = _topology(topology)
        t = self.topology.train
        timeout_s = timeout_s or t.timeout_s
        # device: auto | cpu | cuda (default train.device); on CUDA this rank's GPU is LOCAL_RANK's
        if device is None and dist.is_initialized():  # joined by `launch`, torchrun or Ray: their device
            run_device = "cuda" if "nccl" in str(dist.get_backend()) else "cpu"
        else:
            run_device = resolve_device(device or t.device, "device" if device else None, self.topology.source)
        if not dist.is_initialized():
            init_distributed(timeout_s, run_device)
        self.world_size = dist.get_world_size()
        if not colocated and self.world_size != self.topology.world_size:
            raise ValueError(f"{self.topology.source} needs {self.topology.world_size} ranks but the process group "
                             f"has {self.world_size} (pass colocated=True to run every module on all ranks)")
        cfg = RunConfig(steps=t.steps, seed=t.seed if seed is None else seed, colocated=colocated,
                        nproc=self.world_size, schedule=schedule or t.schedule, timeout_s=timeout_s, progress=False,
                        frozen_lead=0,  # the caller hands in each step's batch: nothing to compute ahead
                        device=run_device,
                        grad_reducer=resolve_grad_reducer(t.grad_reducer, run_device, self.topology.source))
        self._rt = RankRuntime(self.topology, cfg)
        rt = self._rt
        self.rank, self.plan, self.role, self.groups = rt.rank, rt.plan, rt.role, rt.groups
        self.model, self.optimizers, self.cfg = rt.model, rt.optimizers, cfg
        self.step = 0
        self._eval_feeder, self._eval_step = None, 0

    @property
    def dataset(self):
        """The topology's training data as the feeder reads it (None without a `data:` section)."""
        return self._rt.dataset

    def train_step(self, batch: Batch = None) -> Dict[str, float]:
        """One optimizer step; the same metrics on every rank (collective: call it on every rank).

        batch: None takes the next global batch of the topology's data through the runtime's
        sampler; a list of `train.global_batch` samples (MimoModel.forward's format, the same
        list on every rank: each rank reads only the fields it uses) trains on those; an
        iterator of such lists takes its next one.
        """
        step = self.step
        metrics = self._with_batch(batch, lambda: self._rt.train_step(step))
        self.step += 1
        return metrics

    def eval_step(self, batch: Batch = None) -> Dict[str, float]:
        """Forward-only loss (no gradients) over one global batch: {'loss': ...} on every rank.

        batch: None takes the next global batch of the topology's held-out split; otherwise as
        in `train_step`.
        """
        if batch is not None:
            return {"loss": self._with_batch(batch, lambda: self._rt.eval_step(0))}
        if self._eval_feeder is None:
            from mimo_runtime.train.evaluate import held_out_feeder

            self._eval_feeder = held_out_feeder(self._rt)
        index = self._eval_step
        self._eval_step += 1
        return {"loss": self._swapped(self._eval_feeder, lambda: self._rt.eval_step(index))}

    def _with_batch(self, batch: Batch, run: Callable[[], Any]) -> Any:
        if batch is None:
            return run()
        if isinstance(batch, collections.abc.Iterator):
            batch = next(batch)
        return self._swapped(self._rt.make_feeder(self._batch_dataset(list(batch)), shuffle=False), run)

    def _batch_dataset(self, samples: List[Any]):
        from mimo_runtime.data.samples import SampleDataset

        want = self.plan.global_batch
        if len(samples) != want:
            raise ValueError(f"got a batch of {len(samples)} samples; train.global_batch of "
                             f"{self.topology.source} is {want} (pass the same global batch on every rank)")
        return SampleDataset(samples, tuple(self.topology.encoders), self.topology.source, "batch",
                             "Runtime.train_step", 0, self._rt.model_facts()[1])

    def _swapped(self, feeder, run: Callable[[], Any]) -> Any:
        compute = self._rt.executor.compute
        saved, compute.feeder = compute.feeder, feeder
        try:
            return run()
        finally:
            compute.feeder = saved


def launch(topology: TopologyLike, fn: Optional[Callable] = None, args: Sequence[Any] = (), *,
           steps: Optional[int] = None, seed: Optional[int] = None, colocated: bool = False,
           nproc: Optional[int] = None, metrics_path: Optional[str] = None, ray: bool = False,
           address: Optional[str] = None, timeout_s: float = 24 * 3600.0, device: Optional[str] = None) -> List[Any]:
    """Start the ranks of `topology` (local processes, or Ray actors with ray=True) and return
    one result per rank, in rank order.

    fn: run `fn(*args)` on every rank with the process group up (build a `Runtime` inside; fn and
    args must pickle: a module-level function, and `if __name__ == "__main__":` around the call
    in a script); its return values come back. Without fn, the built-in loop trains `steps`
    steps (default train.steps) like `mimo-run train`; each rank's RankResult comes back
    (rank 0's `.metrics` holds the per-step records). device: auto | cpu | cuda (default
    train.device), as `mimo-run train --device`.
    """
    from mimo_runtime.launch.local import describe_ranks
    from mimo_runtime.train.config import RunConfig
    from mimo_runtime.train.device import resolve_device, resolve_grad_reducer, topology_wants_gpus

    topo = _topology(topology)
    preflight(topo, needs_data=fn is None)
    t = topo.train
    world = nproc or (1 if colocated else topo.world_size)
    if not colocated and world != topo.world_size:
        raise ValueError(f"nproc={world} but {topo.source} needs {topo.world_size} ranks (or pass colocated=True)")
    run_device = resolve_device(device or t.device, "device" if device else None, topo.source,
                                topology_wants_gpus(topo) if ray else None)
    cfg = RunConfig(steps=steps or t.steps, seed=t.seed if seed is None else seed, colocated=colocated,
                    nproc=world, schedule=t.schedule, metrics_path=metrics_path, timeout_s=t.timeout_s,
                    progress=fn is None, device=run_device,
                    grad_reducer=resolve_grad_reducer(t.grad_reducer, run_device, topo.source))
    if fn is None and ray:
        from mimo_runtime.launch.ray import launch_ray

        return launch_ray(topo, cfg, address).results
    if fn is None:
        from mimo_runtime.launch.local import launch_local

        return launch_local(topo, cfg, timeout_s)
    if ray:
        from mimo_runtime.launch.ray import run_job
        from mimo_runtime.train.runtime import plan_for

        return run_job(_call, lambda attempt: (fn, tuple(args)), topo, plan_for(topo, cfg), describe_ranks(topo, cfg),
                       cfg.timeout_s, address, job_timeout_s=timeout_s, device=run_device).results
    from mimo_runtime.launch.spawn import spawn

    return spawn(_call, world, args=(fn, tuple(args)), timeout_s=timeout_s, describe=describe_ranks(topo, cfg),
                 collective_timeout_s=cfg.timeout_s, device=run_device)


def _call(rank: int, world_size: int, fn: Callable, args: Sequence[Any]) -> Any:
    return fn(*args)
