"""One optimizer per module from its section: AdamW or SGD hyper-parameters, a weight-decay group
and a no-weight-decay group (the `no_weight_decay` globs), frozen parameters in neither."""

import pytest
import torch

from mimo_runtime.groups import build_module_groups, one_rank_world
from mimo_runtime.model import build_model, global_parameters
from mimo_runtime.plan import colocated_plan
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.freeze import apply_freeze
from mimo_runtime.train.optim import build_optimizers, set_learning_rates


@pytest.fixture(scope="module")
def built():
    torch.set_num_threads(1)
    with one_rank_world():
        topo = topology_from_dict({"model": "tiny-vlm", "modules": {
            "images": {"kind": "encoder", "freeze": ["encoders.*.layers.*"],
                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}},
            "language": {"kind": "language", "optimizer": {"no_weight_decay": ["*bias", "*norm*", "embedding.*"],
                                                           "betas": [0.8, 0.9], "eps": 1.0e-6}}},
            "train": {"weight_decay": 0.1, "lr": 0.002}})
        plan = colocated_plan(topo, 1)
        model = build_model(plan, build_module_groups(plan, 30), 0, seed=0)
        apply_freeze(model, plan, 0)
        names = {id(p): n for n, (p, *_rest) in global_parameters(model).items()}
        yield plan, model, build_optimizers(model, plan, 0), names


def grouped(opt, names):
    return [(g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in opt.param_groups]


def test_each_module_gets_its_own_optimizer_kind_and_hyperparameters(built):
    _, _, opts, _ = built
    img, lang = opts["images"], opts["language"]
    assert isinstance(img, torch.optim.SGD) and img.defaults["momentum"] == 0.5 and img.defaults["lr"] == 0.1
    assert isinstance(lang, torch.optim.AdamW) and lang.defaults["betas"] == (0.8, 0.9)
    assert lang.defaults["eps"] == 1.0e-6 and lang.defaults["lr"] == 0.002


def test_no_weight_decay_globs_pick_the_zero_decay_group(built):
    _, _, opts, names = built
    (wd, decayed), (zero, plain) = grouped(opts["language"], names)
    assert (wd, zero) == (0.1, 0.0)
    assert all(n.endswith("weight") and "norm" not in n and "embedding" not in n for n in decayed)
    assert "language_model.embedding.word_embeddings.weight" in plain
    assert any(n.endswith("layernorm.weight") for n in plain) and any(n.endswith("bias") for n in plain)


def test_frozen_parameters_are_in_no_group(built):
    _, model, opts, names = built
    in_groups = {n for _, group in grouped(opts["images"], names) for n in group}
    frozen = {n for n, (p, *_rest) in global_parameters(model).items() if not p.requires_grad}
    assert frozen and all(".layers." in n for n in frozen) and not frozen & in_groups
    assert any("patch_embed" in n for n in in_groups) and grouped(opts["images"], names)[0][0] == 0.01


def test_set_learning_rates_writes_every_group_of_every_module(built):
    plan, _, opts, _ = built
    set_learning_rates(opts, plan, 3)
    assert [g["lr"] for g in opts["images"].param_groups] == [0.1, 0.1]
    assert [g["lr"] for g in opts["language"].param_groups] == [0.002, 0.002]
