"""`train.optimizer` defaults, `modules.NAME.optimizer` overrides and the training-control keys:
what the loader resolves, and the one-line errors for what cannot work."""

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology import topology_from_dict


def vlm(images=None, language=None, **train):
    return topology_from_dict({"model": "tiny-vlm", "modules": {
        "images": {"kind": "encoder", **(images or {})},
        "language": {"kind": "language", **(language or {})}}, "train": train}, source="t.yaml")


def error(**kw) -> str:
    with pytest.raises(TopologyError) as e:
        vlm(**kw)
    return str(e.value)


def test_every_module_gets_a_complete_section_from_train_and_the_defaults():
    topo = vlm(lr=0.01, weight_decay=0.1, steps=30)
    for m in topo.modules.values():
        o = m.optimizer
        assert (o.name, o.lr, o.weight_decay, o.betas, o.eps, o.momentum) == ("adamw", 0.01, 0.1, (0.9, 0.999), 1e-8, 0.0)
        assert (o.lr_schedule, o.warmup_steps, o.decay_steps, o.min_lr) == ("constant", 0, 30, 0.0)
        assert o.no_weight_decay == ("*bias", "*norm*")
        assert m.precision == "fp32" and m.recompute == "none" and m.freeze == () and m.pretrained is None


def test_module_keys_override_train_optimizer_which_overrides_the_defaults():
    topo = vlm(images={"optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9, "warmup_steps": None}},
               optimizer={"lr_schedule": "warmup_cosine", "warmup_steps": 3, "min_lr": 1.0e-5,
                          "no_weight_decay": ["*bias"]}, lr=0.002, precision="bf16")
    img, lang = topo.modules["images"].optimizer, topo.language.optimizer
    assert (img.name, img.lr, img.momentum, img.lr_schedule, img.warmup_steps, img.min_lr) == (
        "sgd", 0.5, 0.9, "warmup_cosine", 3, 1.0e-5)  # `null` inherits like a missing key
    assert (lang.name, lang.lr, lang.lr_schedule, lang.no_weight_decay) == ("adamw", 0.002, "warmup_cosine", ("*bias",))
    assert topo.train.optimizer == lang
    assert topo.modules["images"].precision == "bf16"


def test_module_precision_recompute_freeze_and_pretrained_are_read():
    topo = vlm(images={"precision": "bf16", "recompute": "full", "freeze": ["encoders.*"],
                       "pretrained": {"path": "enc.pt", "map": "my_pkg.names:to_mimo", "strict": False}})
    img = topo.modules["images"]
    assert (img.precision, img.recompute, img.freeze) == ("bf16", "full", ("encoders.*",))
    assert (img.pretrained.path, img.pretrained.format, img.pretrained.map, img.pretrained.strict) == (
        "enc.pt", "torch", "my_pkg.names:to_mimo", False)
    assert topo.language.precision == "fp32"


@pytest.mark.parametrize("kw, line", [
    (dict(optimizer={"lr": 0.1}),
     "t.yaml: train.optimizer.lr: give the default as train.lr (modules.NAME.optimizer.lr overrides it per module)"),
    (dict(images={"optimizer": {"momentum": 0.9}}),
     "t.yaml: modules.images.optimizer.momentum: momentum applies to sgd; adamw uses betas"),
    (dict(optimizer={"name": "sgd"}, language={"optimizer": {"betas": [0.9, 0.95]}}),
     "t.yaml: modules.language.optimizer.betas: betas applies to adamw, not sgd"),
    (dict(images={"optimizer": {"betas": [0.9, 1.0]}}),
     "t.yaml: modules.images.optimizer.betas: each beta must be in [0, 1), got [0.9, 1.0]"),
    (dict(optimizer={"warmup_steps": 2}),
     "t.yaml: train.optimizer.warmup_steps: lr_schedule constant has no warm-up; use warmup_cosine or warmup_linear"),
    (dict(steps=5, optimizer={"lr_schedule": "warmup_linear", "warmup_steps": 6}),
     "t.yaml: train.optimizer.warmup_steps: 6 warm-up steps exceed decay_steps=5"),
    (dict(lr=0.001, images={"optimizer": {"min_lr": 0.01}}),
     "t.yaml: modules.images.optimizer.min_lr: 0.01 is above the peak lr 0.001"),
    (dict(images={"optimizer": {"lr_schedule": "cosine"}}),
     "t.yaml: modules.images.optimizer.lr_schedule: must be one of constant, warmup_cosine, warmup_linear, got 'cosine'"),
    (dict(images={"optimizer": {"name": "adam"}}),
     "t.yaml: modules.images.optimizer.name: must be one of adamw, sgd, got 'adam'"),
    (dict(images={"optimizer": {"betas": [0.9]}}),
     "t.yaml: modules.images.optimizer.betas: expected a list of 2 items, got 1"),
    (dict(images={"freeze": ["encoders.*", " "]}),
     "t.yaml: modules.images.freeze[1]: an empty pattern matches nothing"),
    (dict(images={"freeze": "encoders.*"}),
     "t.yaml: modules.images.freeze: expected a list, got 'encoders.*'"),
    (dict(images={"precision": "fp16"}),
     "t.yaml: modules.images.precision: must be one of fp32, bf16, got 'fp16'"),
    (dict(language={"recompute": "some"}),
     "t.yaml: modules.language.recompute: must be one of none, full, selective, got 'some'"),
    (dict(images={"pretrained": {"format": "torch"}}),
     "t.yaml: modules.images.pretrained.path: required key is missing"),
    (dict(images={"pretrained": {"path": "x.pt", "map": "names.to_mimo"}}),
     "t.yaml: modules.images.pretrained.map: expected 'package.module:function', got 'names.to_mimo'"),
    (dict(images={"optimizer": {"lr_schedul": "constant"}}),
     "t.yaml: modules.images.optimizer.lr_schedul: unknown key (did you mean 'lr_schedule'?)"),
])
def test_mistakes_give_one_line_naming_the_key_to_change(kw, line):
    assert error(**kw) == line
