"""HF tensor names and layouts <-> megatron parameters: pure functions, no processes."""

import itertools

import pytest
import torch

from mimo_runtime.hf.names import (combine, export_tensors, fuse_qkv, key_index, normalize, qkv_ranges, read_plan,
                                   recipe, split_qkv)

LAYER = "language_model.decoder.layers.3."
VIT = "modality_submodules.images.encoders.vision_tower."
PROJ = "modality_submodules.images.input_projections.0.encoder."


@pytest.mark.parametrize("key", ["language_model.model.layers.0.mlp.up_proj.weight",
                                 "model.language_model.layers.0.mlp.up_proj.weight",
                                 "model.layers.0.mlp.up_proj.weight"])
def test_language_key_prefixes_normalize_alike(key):
    assert normalize(key) == "lm.layers.0.mlp.up_proj.weight"


@pytest.mark.parametrize("key", ["vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias",
                                 "vision_tower.encoder.layers.1.mlp.fc1.bias",
                                 "model.vision_tower.encoder.layers.1.mlp.fc1.bias",
                                 "vision_model.encoder.layers.1.mlp.fc1.bias"])
def test_vision_key_prefixes_normalize_alike(key):
    assert normalize(key) == "vision.encoder.layers.1.mlp.fc1.bias"


def test_lm_head_and_projector_prefixes():
    assert normalize("lm_head.weight") == normalize("language_model.lm_head.weight") == "lm.lm_head.weight"
    assert normalize("multi_modal_projector.linear_2.bias") == "projector.linear_2.bias"
    assert normalize("model.multi_modal_projector.linear_2.bias") == "projector.linear_2.bias"
    assert normalize("some_head.weight") is None
    assert key_index(["model.norm.weight", "x.y"]) == {"lm.norm.weight": "model.norm.weight"}


def test_language_recipes():
    assert recipe(LAYER + "self_attention.linear_qkv.weight").sources == (
        "lm.layers.3.self_attn.q_proj.weight", "lm.layers.3.self_attn.k_proj.weight",
        "lm.layers.3.self_attn.v_proj.weight")
    assert recipe(LAYER + "self_attention.linear_qkv.bias").kind == "qkv"
    fc1 = recipe(LAYER + "mlp.linear_fc1.weight")
    assert (fc1.kind, fc1.sources) == ("gated", ("lm.layers.3.mlp.gate_proj.weight", "lm.layers.3.mlp.up_proj.weight"))
    assert recipe(LAYER + "pre_mlp_layernorm.weight").sources == ("lm.layers.3.post_attention_layernorm.weight",)
    assert recipe("language_model.output_layer.weight").sources == ("lm.lm_head.weight",)
    assert recipe("language_model.embedding.word_embeddings.weight").sources == ("lm.embed_tokens.weight",)
    assert recipe("language_model.decoder.final_layernorm.weight").sources == ("lm.norm.weight",)


def test_vision_and_projector_recipes():
    assert recipe(VIT + "block.layers.0.self_attention.linear_qkv.bias").sources == tuple(
        f"vision.encoder.layers.0.self_attn.{p}_proj.bias" for p in "qkv")
    assert recipe(VIT + "block.layers.2.input_layernorm.weight").sources == ("vision.encoder.layers.2.layer_norm1.weight",)
    assert recipe(VIT + "block.layers.2.self_attention.linear_proj.bias").sources == (
        "vision.encoder.layers.2.self_attn.out_proj.bias",)
    assert recipe(VIT + "block.layers.2.mlp.linear_fc1.weight").kind == "copy"  # ViT MLPs are not gated
    assert recipe(VIT + "position_embedding").sources == ("vision.embeddings.position_embedding.weight",)
    assert recipe(VIT + "pre_layrnorm.bias").sources == ("vision.pre_layrnorm.bias",)
    assert recipe(PROJ + "linear_fc2.weight").sources == ("projector.linear_2.weight",)
    assert recipe(PROJ + "weight") is None  # the linear (affine) projector has no HF counterpart


def _reference_fused(q, k, v, groups):
    # megatron attention.py: rows grouped per query group, q heads then k then v
    per = q.size(0) // groups
    d = k.size(0) // groups
    rows = []
    for g in range(groups):
        rows += [q[g * per:(g + 1) * per], k[g * d:(g + 1) * d], v[g * d:(g + 1) * d]]
    return torch.cat(rows)


CASES = [(h, g, d, tp) for h, g, d, tp in itertools.product([1, 2, 4, 8, 12, 32], [1, 2, 4, 8], [1, 3, 8], [1, 2, 4, 8])
         if h % g == 0 and g % tp == 0]


@pytest.mark.parametrize("bias", [False, True])
def test_qkv_fuse_split_and_tp_shards_on_generated_cases(bias):
    assert len(CASES) > 100
    for heads, groups, d, tp in CASES:
        rest = () if bias else (5,)
        q = torch.randn(heads * d, *rest)
        k, v = torch.randn(groups * d, *rest), torch.randn(groups * d, *rest)
        fused = fuse_qkv(q, k, v, groups)
        assert torch.equal(fused, _reference_fused(q, k, v, groups)), (heads, groups, d)
        assert all(torch.equal(a, b) for a, b in zip(split_qkv(fused, heads, groups, d), (q, k, v)))
        r = recipe(LAYER + ("self_attention.linear_qkv.bias" if bias else "self_attention.linear_qkv.weight"))
        full = {"q": q, "k": k, "v": v}
        step = fused.size(0) // tp
        for rank in range(tp):
            plan = read_plan(r, [q.shape, k.shape, v.shape], 0, rank, tp, heads, groups)
            parts = [full[src.split(".")[-2][0]].narrow(dim, a, b - a) for src, dim, a, b in plan]
            shard = combine(r, parts, groups // tp)
            assert torch.equal(shard, fused[rank * step:(rank + 1) * step]), (heads, groups, d, tp, rank)


def test_qkv_ranges_refuse_tp_that_splits_a_query_group():
    with pytest.raises(ValueError, match="does not divide the 2 query groups"):
        qkv_ranges(8, 2, 4, 0, 4)


def test_gated_fc1_shards_are_gate_then_up_of_each_rank():
    r = recipe(LAYER + "mlp.linear_fc1.weight")
    for ffn, tp in itertools.product([4, 8, 96, 1024], [1, 2, 4]):
        gate, up = torch.randn(ffn, 3), torch.randn(ffn, 3)
        for rank in range(tp):
            plan = read_plan(r, [gate.shape, up.shape], 0, rank, tp)
            parts = [(gate if "gate" in src else up).narrow(dim, a, b - a) for src, dim, a, b in plan]
            step = ffn // tp
            want = torch.cat([gate[rank * step:(rank + 1) * step], up[rank * step:(rank + 1) * step]])
            assert torch.equal(combine(r, parts), want)


def test_row_parallel_weights_slice_columns():
    r = recipe(LAYER + "self_attention.linear_proj.weight")
    assert read_plan(r, [[64, 32]], 1, 1, 4) == [("lm.layers.3.self_attn.o_proj.weight", 1, 8, 16)]
    assert read_plan(r, [[64, 32]], None, 0, 1) == [("lm.layers.3.self_attn.o_proj.weight", 0, 0, 64)]


def test_export_inverts_the_fused_layouts():
    q, k, v = torch.randn(16, 8), torch.randn(8, 8), torch.randn(8, 8)
    out = export_tensors(LAYER + "self_attention.linear_qkv.weight", fuse_qkv(q, k, v, 2), 4, 2, 4)
    assert torch.equal(out["lm.layers.3.self_attn.k_proj.weight"], k)
    gate, up = torch.randn(6, 8), torch.randn(6, 8)
    out = export_tensors(LAYER + "mlp.linear_fc1.weight", torch.cat([gate, up]))
    assert torch.equal(out["lm.layers.3.mlp.gate_proj.weight"], gate)
    assert torch.equal(out["lm.layers.3.mlp.up_proj.weight"], up)
