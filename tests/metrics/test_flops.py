"""Model FLOPs from the architecture (train/flops.py) against hand counts, and the pure metric helpers."""

import pytest
import torch

from mimo_runtime.train.flops import (LayerDims, encoder_step_flops, language_step_flops, layer_forward_flops, mfu,
                                      preset_step_flops)
from mimo_runtime.train.metrics import bubble_share, content_tokens, throughput
from tests.model.conftest import one_rank_world  # noqa: F401 - the model test below runs in a 1-rank world

LANG = LayerDims(hidden=64, heads=4, ffn_hidden=256)  # tiny-vlm's language model
ENC = LayerDims(hidden=32, heads=4, ffn_hidden=128)  # tiny-vlm's image encoder


def test_a_layer_counts_qkv_attention_output_and_mlp_per_token():
    # per token: qkv 2*64*(64+2*64) = 24576, scores+values 2*2*32*64 = 8192, out 2*64*64 = 8192,
    # mlp 2*64*256*2 = 65536: 106496
    assert layer_forward_flops(LANG, tokens=1, seq=32) == 106_496
    assert layer_forward_flops(LANG, tokens=256, seq=32) == 256 * 106_496


def test_grouped_query_attention_narrows_k_and_v_and_a_gated_mlp_has_three_matrices():
    # 2 query groups of 4 heads: K and V are 32 wide, qkv 2*64*(64+64) = 16384 instead of 24576
    assert layer_forward_flops(LayerDims(64, 4, 256, query_groups=2), 1, 32) == 106_496 - 8192
    # gated: fc1 is twice as wide, mlp 2*64*256*3 = 98304 instead of 65536
    assert layer_forward_flops(LayerDims(64, 4, 256, gated=True), 1, 32) == 106_496 + 32_768


def test_a_language_step_is_three_forwards_of_the_layers_and_the_output_layer():
    # 8 samples x 32 positions = 256 tokens; 4 layers 4*256*106496 = 109051904; logits 2*256*64*64 = 2097152
    assert language_step_flops(LANG, layers=4, vocab=64, samples=8, seq=32) == 3 * (109_051_904 + 2_097_152)


def test_an_encoder_step_counts_its_projector_and_a_frozen_encoder_only_its_forward():
    # 10 images x 4 tokens = 40 tokens; per token 6144 + 512 + 2048 + 16384 = 25088; 2 layers: 2007040
    # projector 32->64->64: 2*40*(32*64 + 64*64) = 491520, always trained
    assert layer_forward_flops(ENC, 1, 4) == 25_088
    assert encoder_step_flops(ENC, 2, 64, items=10, tokens_per_item=4, frozen=False) == 3 * 2_007_040 + 3 * 491_520
    assert encoder_step_flops(ENC, 2, 64, items=10, tokens_per_item=4, frozen=True) == 2_007_040 + 3 * 491_520


def test_preset_flops_per_module_and_none_for_a_user_model():
    got = preset_step_flops("tiny-vlm", 8, {"images": 10}, {"images": False})
    assert got == {"language": 3 * (109_051_904 + 2_097_152), "images": 3 * 2_007_040 + 3 * 491_520}
    assert set(preset_step_flops("tiny-avlm", 8, {}, {})) == {"language", "images", "audio"}
    assert preset_step_flops("my.pkg:factory", 8, {}, {}) is None


def test_mfu_and_throughput_per_module():
    assert mfu(2e12, seconds=0.5, ranks=2, peak_tflops=4.0) == pytest.approx(0.5)
    got = throughput({"images": 1e12, "language": 3e12}, 2.0, {"images": 1, "language": 2}, peak_tflops=1.0)
    assert got["tflops_per_s"] == {"images": 0.5, "language": 1.5, "all": 2.0}
    assert got["mfu"] == {"images": 0.5, "language": 0.75, "all": pytest.approx(2.0 / 3)}
    assert "mfu" not in throughput({"language": 1e12}, 1.0, {"language": 1}, peak_tflops=None)


def test_bubble_share_is_the_idle_share_of_all_rank_seconds():
    assert bubble_share([1.0, 1.0], 1.0) == 0.0
    assert bubble_share([0.5, 0.25, 0.75, 0.5], 1.0) == pytest.approx(0.5)


def test_non_padding_tokens_are_every_token_before_the_padding_of_generated_samples():
    from mimo_runtime.data import PAD, make_dataset

    data = make_dataset("tiny-avlm", "train", seed=3, size=200)
    samples = [data.tokens(i) for i in range(len(data))]
    assert content_tokens(samples) == sum(int((s["input_ids"] != PAD).sum()) for s in samples)
    assert content_tokens([{"loss_mask": torch.zeros(8)}]) == 0


def test_the_formula_matches_the_matmuls_torch_counts_in_the_built_model_plus_attention():
    """torch's FlopCounterMode counts every matmul of a real forward but not the CPU attention kernel:
    the formula must equal what it counts, plus the attention term, minus the patch stem (not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mimo_runtime.data import collate_modality, collate_tokens, make_dataset
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model import build_model
    from mimo_runtime.plan import colocated_plan
    from mimo_runtime.topology import topology_from_dict

    topo = topology_from_dict({"model": "tiny-vlm", "modules": {"images": {"kind": "encoder"},
                                                                "language": {"kind": "language"}}})
    plan = colocated_plan(topo, 1)
    model = build_model(plan, build_module_groups(plan, 30), 0, seed=0)
    data = make_dataset("tiny-vlm", "train", 0)
    ids = range(8)
    tokens = collate_tokens([data.tokens(i) for i in ids])
    inputs = {"images": collate_modality([data.modality(i, "images") for i in ids])}
    items = sum(data.num_items(i, "images") for i in ids)
    with FlopCounterMode(display=False) as counter:
        model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], None, inputs)
    patch_stem = 2 * items * 4 * 16 * 32  # 4 patches of 4x4 pixels per image -> 32 wide
    attention = 4 * 256 * 2 * 2 * 32 * 64 + 2 * items * 4 * 2 * 2 * 4 * 32  # language layers + encoder layers
    forward = sum(preset_step_flops("tiny-vlm", 8, {"images": items}, {"images": False}).values()) // 3
    assert counter.get_total_flops() - patch_stem + attention == forward
