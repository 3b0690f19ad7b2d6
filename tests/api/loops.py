"""A user's own training loop over `mimo_runtime.Runtime`, run on every rank by `mimo_runtime.launch`."""

import torch.distributed as dist

import mimo_runtime
from mimo_runtime.train.sampler import Sampler


def custom_loop(topology, seed: int):
    rt = mimo_runtime.Runtime(topology, seed=seed)
    out = {"rank": rt.rank, "world_size": rt.world_size, "role": sorted(rt.role.modules),
           "language_built": rt.model.language_model is not None, "encoders_built": sorted(rt.model.modality_submodules),
           "groups": sorted(rt.groups), "optimizers": sorted(rt.optimizers)}
    # which samples the runtime's sampler takes at each step, to hand the same ones over as lists
    order = Sampler.for_plan(rt.plan, len(rt.dataset), seed)
    batch = [[rt.dataset.data[i] for i in order.step_samples(s)] for s in range(3)]
    try:
        rt.train_step(batch[1][:3])
    except ValueError as e:
        out["short_batch"] = str(e)
    out["train"] = [rt.train_step(),  # the topology's data through the sampler
                    rt.train_step(batch[1]),  # an explicit global batch (each rank reads its fields)
                    rt.train_step(iter([batch[2]]))]  # a batch iterator
    out["eval_list"] = rt.eval_step(batch[0])["loss"]
    out["eval_heldout"] = [rt.eval_step()["loss"] for _ in range(2)]
    out["step"] = rt.step
    dist.barrier()
    return out
