"""The cost model: FLOPs split by tp and cp, pipeline stages split layers, frozen encoders skip backward."""

import pytest

from mimo_runtime.autoplan import Hardware, module_dims, stage_cost
from mimo_runtime.autoplan.costs import layer_flops, rank_bytes
from mimo_runtime.topology import PRESETS

FREE_LINK = Hardware(flops_per_s=1e9, link_latency_s=0.0, link_bytes_per_s=float("inf"))
PRESET = PRESETS["tiny-avlm"]


def cost(name, shape, stage=0, samples=2, hw=FREE_LINK, frozen=False, frozen_all=False):
    return stage_cost(module_dims(PRESET, name), shape, stage, samples, hw, language=name == "language",
                      frozen=frozen, frozen_all=frozen_all)


def test_tensor_and_context_parallelism_divide_the_compute():
    one = cost("language", (1, 1, 1, 1))
    assert cost("language", (2, 1, 1, 1)).forward == pytest.approx(one.forward / 2)
    assert cost("language", (1, 2, 1, 1)).forward == pytest.approx(one.forward / 2)
    assert one.backward == pytest.approx(2 * one.forward)


def test_pipeline_stages_split_the_layers_and_only_the_last_computes_the_logits():
    d = module_dims(PRESET, "language")
    first, last = cost("language", (1, 1, 1, 2), 0), cost("language", (1, 1, 1, 2), 1)
    layers = 2 * layer_flops(d) * 2 / FREE_LINK.flops_per_s  # 2 layers x 2 samples
    assert first.forward == pytest.approx(layers)
    assert last.forward == pytest.approx(layers + 2 * d.extra_flops / FREE_LINK.flops_per_s)


def test_tensor_parallel_all_reduces_cost_time_on_a_real_link():
    slow = Hardware(flops_per_s=1e9, link_latency_s=1e-4, link_bytes_per_s=1e8)
    assert cost("language", (2, 1, 1, 1), hw=slow).forward > cost("language", (2, 1, 1, 1)).forward


def test_a_frozen_encoder_backpropagates_only_its_projection_and_a_fully_frozen_one_nothing():
    trained, frozen = cost("images", (1, 1, 1, 1)), cost("images", (1, 1, 1, 1), frozen=True)
    projection = module_dims(PRESET, "images").extra_flops * 2 / FREE_LINK.flops_per_s  # 2 samples
    assert frozen.backward == pytest.approx(2 * projection) and frozen.backward < trained.backward
    assert 0 < frozen.trainable < trained.trainable == trained.params
    gone = cost("images", (1, 1, 1, 1), frozen_all=True)
    assert gone.backward == 0 and gone.trainable == 0 and gone.reduce == 0


def test_memory_counts_adam_state_for_trained_weights_and_activations_per_microbatch_in_flight():
    c = cost("language", (1, 1, 1, 1))
    assert rank_bytes(c, 0) == 16 * c.params
    assert rank_bytes(c, 3) - rank_bytes(c, 1) == pytest.approx(2 * c.act_bytes)
    assert rank_bytes(cost("language", (2, 1, 1, 1)), 1) < rank_bytes(c, 1)
