"""The per-rank memory estimate of `mimo-run check` (pure: parameter lists in, bytes out)."""

import pytest

from mimo_runtime.launch.commands.check_memory import Param, estimate
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict

ENC, LANG = {"kind": "encoder"}, {"kind": "language"}


def plan(images=None, language=None, **train):
    return make_plan(topology_from_dict({"modules": {"images": {**ENC, **(images or {})},
                                                     "language": {**LANG, **(language or {})}},
                                         "train": train}, "t.yaml"))


def params(layers=4, trainable=True):
    """Per layer a TP-split 10x10 weight and a replicated 10-vector; plus a 100-value embedding."""
    out = [Param("embedding.weight", (10, 10), trainable, True)]
    for i in range(layers):
        out += [Param(f"decoder.layers.{i}.fc.weight", (10, 10), trainable, True),
                Param(f"decoder.layers.{i}.norm.weight", (10,), trainable, False)]
    return out


def test_fp32_adamw_costs_16_bytes_per_trained_value():
    ranks = estimate(plan(), {"images": params(2), "language": params(4)})
    values = 100 + 4 * 110
    lang = ranks[1]
    assert (lang.params, lang.grads, lang.optimizer) == (4 * values, 4 * values, 8 * values)


def test_tp_splits_only_the_partitioned_parameters():
    ranks = estimate(plan(language={"ranks": 2, "parallel": {"tp": 2}}), {"images": params(2), "language": params(4)})
    assert [r.params for r in ranks[1:]] == [4 * (50 + 4 * (50 + 10))] * 2


def test_pp_splits_layers_and_keeps_the_rest_on_every_stage():
    ranks = estimate(plan(language={"ranks": 2, "parallel": {"pp": 2}}), {"images": params(2), "language": params(4)})
    assert [r.what for r in ranks] == ["images", "language stage 0", "language stage 1"]
    assert [r.params for r in ranks[1:]] == [4 * (100 + 2 * 110)] * 2


@pytest.mark.parametrize("optimizer, per_value", [({"name": "sgd"}, 0), ({"name": "sgd", "momentum": 0.9}, 4)])
def test_sgd_state_is_its_momentum_buffer(optimizer, per_value):
    ranks = estimate(plan(language={"optimizer": optimizer}), {"images": params(2), "language": params(4)})
    assert ranks[1].optimizer == per_value * (100 + 4 * 110)


def test_frozen_parameters_have_no_gradients_and_no_optimizer_state():
    ranks = estimate(plan(), {"images": params(2, trainable=False), "language": params(4)})
    assert (ranks[0].params, ranks[0].grads, ranks[0].optimizer) == (4 * (100 + 2 * 110), 0, 0)


def test_activations_grow_with_the_microbatch_and_are_unknown_for_factory_models():
    small = estimate(plan(micro_batch=1, global_batch=8), {"images": params(2), "language": params(4)})
    large = estimate(plan(micro_batch=4, global_batch=8), {"images": params(2), "language": params(4)})
    assert 0 < small[1].activations < large[1].activations
    factory = make_plan(topology_from_dict({"model": {"factory": "pkg.mod:build"}, "data": {"factory": "pkg.d:build"},
                                            "modules": {"images": ENC, "language": LANG}}, "t.yaml"))
    assert estimate(factory, {"images": params(2), "language": params(4)})[1].activations is None
