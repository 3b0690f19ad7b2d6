"""Whisper's HF names and layouts <-> the megatron audio encoder: pure functions, no processes."""

import itertools

import pytest
import torch

from mimo_runtime.hf.names import AUDIO_KEY, combine, export_tensors, fuse_qkv, key_index, read_plan, recipe

ENC = f"modality_submodules.speech.encoders.{AUDIO_KEY}."
LAYER = ENC + "block.layers.1."


def test_the_audio_key_is_the_whisper_encoders():
    from mimo_runtime.model.families.whisper import WHISPER_KEY

    assert AUDIO_KEY == WHISPER_KEY


@pytest.mark.parametrize("prefix", ["model.encoder.", "encoder.", ""])
def test_every_whisper_layout_indexes_its_encoder_alike_and_skips_the_decoder(prefix):
    keys = [f"{prefix}layers.0.fc1.weight", f"{prefix}conv1.bias", "model.decoder.layers.0.fc1.weight",
            "decoder.embed_tokens.weight", "proj_out.weight"]
    assert key_index(keys, "audio") == {"audio.layers.0.fc1.weight": f"{prefix}layers.0.fc1.weight",
                                        "audio.conv1.bias": f"{prefix}conv1.bias"}


@pytest.mark.parametrize("leaf, kind, sources", [
    ("input_layernorm.bias", "copy", ("self_attn_layer_norm.bias",)),
    ("self_attention.linear_qkv.weight", "qkv", ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                 "self_attn.v_proj.weight")),
    ("self_attention.linear_qkv.bias", "qkv_no_k", ("self_attn.q_proj.bias", "self_attn.v_proj.bias")),
    ("self_attention.linear_proj.weight", "copy", ("self_attn.out_proj.weight",)),
    ("pre_mlp_layernorm.weight", "copy", ("final_layer_norm.weight",)),
    ("mlp.linear_fc1.bias", "copy", ("fc1.bias",)),
    ("mlp.linear_fc2.weight", "copy", ("fc2.weight",)),
])
def test_whisper_layer_recipes(leaf, kind, sources):
    r = recipe(LAYER + leaf)
    assert r.kind == kind and r.sources == tuple(f"audio.layers.1.{s}" for s in sources)


def test_whisper_top_recipes_and_the_unmapped():
    assert recipe(ENC + "conv2.weight").sources == ("audio.conv2.weight",)
    assert recipe(ENC + "embed_positions").sources == ("audio.embed_positions.weight",)
    assert recipe(ENC + "block.final_layernorm.bias").sources == ("audio.layer_norm.bias",)
    assert recipe(ENC + "block.layers.0.self_attention.linear_qkv.layer_norm_weight") is None  # TE's fused norm
    # the projector of an audio module is a LLaVA projector, never read from the Whisper directory
    assert recipe("modality_submodules.speech.input_projections.0.encoder.linear_fc1.bias").sources == (
        "projector.linear_1.bias",)


@pytest.mark.parametrize("heads, tp", [(h, t) for h, t in itertools.product((2, 4, 8), (1, 2, 4)) if h % t == 0])
def test_qkv_bias_without_k_reads_q_and_v_slices_and_zeros_k(heads, tp):
    d = 3
    q, v = torch.randn(heads * d), torch.randn(heads * d)
    r = recipe(LAYER + "self_attention.linear_qkv.bias")
    full = fuse_qkv(q, torch.zeros(heads * d), v, heads)
    sources = {r.sources[0]: q, r.sources[1]: v}
    shards = []
    for rank in range(tp):
        plan = read_plan(r, [list(q.shape), list(v.shape)], 0, rank, tp, heads, heads)
        assert [p[0] for p in plan] == list(r.sources)
        shards.append(combine(r, [sources[s][a:b] for s, _, a, b in plan], heads // tp))
    assert torch.equal(torch.cat(shards), full)
    back = export_tensors(LAYER + "self_attention.linear_qkv.bias", full, heads, heads, d)
    assert sorted(back) == sorted(r.sources) and torch.equal(back[r.sources[0]], q) and torch.equal(
        back[r.sources[1]], v)


def test_a_k_bias_never_changes_attention():
    """Why zeros are a faithful stand-in for Whisper's missing k bias (and export may drop it)."""
    q, k, v, b = torch.randn(5, 4), torch.randn(7, 4), torch.randn(7, 4), torch.randn(4)
    attend = lambda keys: torch.softmax(q @ keys.T, dim=-1) @ v  # noqa: E731
    assert torch.allclose(attend(k), attend(k + b), atol=1e-6)
