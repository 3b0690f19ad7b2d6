"""What the megatron reducer hands megatron-core 0.16.1, checked on CPU where megatron allows it:
the process-group collection passes megatron's own validation for DDP and for the optimizer builder
(`setup_process_groups_for_ddp` / `_for_optimizer`, pure functions), the optimizer config mirrors the
topology's resolved optimizer, and DDP's per-token flag is set on a copy of the module's config.
DDP and the distributed optimizer themselves allocate CUDA buffers: benchmarks/gpu_check.py runs them."""

import pytest
import torch
import torch.distributed as dist

from mimo_runtime.groups import build_module_groups, one_rank_world
from mimo_runtime.model.meta import build_on_meta
from mimo_runtime.plan import colocated_plan
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train import megatron_ddp


@pytest.fixture(scope="module")
def world():
    with one_rank_world():
        yield


def _topology(**train):
    return topology_from_dict({"name": "t", "model": "tiny-vlm", "placement": "colocated",
                               "modules": {"images": {"kind": "encoder", "ranks": 1},
                                           "language": {"kind": "language", "ranks": 1}},
                               "train": {"global_batch": 2, "micro_batch": 2, **train}})


def test_the_group_collection_passes_megatrons_validation(world):
    from megatron.core.process_groups_config import ProcessGroupCollection

    plan = colocated_plan(_topology(), 1)
    groups = build_module_groups(plan, 30.0)
    ep = dist.new_group([0], use_local_synchronization=True)
    pgs = groups["language"].pgs
    full = megatron_ddp.optimizer_groups(pgs, ep)
    assert (full.expt_dp, full.tp_ep_pp, full.intra_dist_opt, full.ep) == (pgs.dp, pgs.mp, pgs.dp_cp, ep)
    assert full.embd is pgs.embd and full.pos_embd is pgs.pos_embd  # finalize's embedding groups kept
    ddp = megatron_ddp.ddp_config()
    got = ProcessGroupCollection.setup_process_groups_for_ddp(full, None, ddp)
    assert got["dp_cp_group"] is pgs.dp_cp and got["expt_dp_group"] is pgs.dp and got["ep_group"] is ep

    class Chunk:  # what the optimizer builder reads off a DDP-wrapped chunk
        ddp_config = ddp

    got = ProcessGroupCollection.setup_process_groups_for_optimizer(full, [Chunk()], use_gloo_process_groups=False)
    assert got["intra_dist_opt_group"] is pgs.dp_cp and got["mp_group"] is pgs.mp
    assert got["expt_tp_pp_group"] is pgs.mp and got["inter_dist_opt_group"] is None
    with pytest.raises(ValueError, match="expt_dp"):  # why the extra groups are needed at all
        ProcessGroupCollection.setup_process_groups_for_optimizer(pgs, [Chunk()], use_gloo_process_groups=False)


def test_ddp_sums_per_token_and_reduces_once_per_step():
    ddp = megatron_ddp.ddp_config()
    assert ddp.use_distributed_optimizer and ddp.grad_reduce_in_fp32
    assert not ddp.overlap_grad_reduce and not ddp.average_in_collective


@pytest.mark.parametrize("train, name", [({"optimizer": {"name": "adamw", "betas": [0.8, 0.95], "eps": 1.0e-6},
                                           "lr": 2.0e-4, "weight_decay": 0.1, "grad_clip": 0.5}, "adam"),
                                         ({"optimizer": {"name": "sgd", "momentum": 0.7}, "lr": 0.1}, "sgd")])
def test_optimizer_config_mirrors_the_resolved_section(train, name):
    topo = _topology(**train)
    opt = topo.modules["language"].optimizer
    cfg = megatron_ddp.optimizer_config(opt, topo.train.grad_clip)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.clip_grad) == (name, opt.lr, opt.weight_decay,
                                                                        topo.train.grad_clip)
    assert cfg.use_distributed_optimizer and cfg.params_dtype == torch.float32 and not (cfg.bf16 or cfg.fp16)
    if name == "adam":
        assert (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps, cfg.decoupled_weight_decay) == (0.8, 0.95, 1e-6, True)
    else:
        assert cfg.sgd_momentum == 0.7


def test_per_token_flag_is_set_on_a_copy(world):
    model, _ = build_on_meta(_topology())
    for name in ("language", "images"):
        config = megatron_ddp._per_token_config(model, name)
        assert config.calculate_per_token_loss
    assert not model.language_model.config.calculate_per_token_loss  # the model's own config untouched
