"""config.json -> family dims: pure, from configs written in the test (transformers only builds them)."""

import json
import math

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.hf.config import model_dims, rope_inv_freq, vision_model_dims
from tests.hf import tiny


def _write(tmp_path, cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def _llava(vision, text, **kw):
    from transformers import LlavaConfig

    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tiny.IMAGE_TOKEN, **kw).to_dict()
    cfg["architectures"] = ["LlavaForConditionalGeneration"]
    return cfg


def test_llava_clip_llama(tmp_path):
    d = model_dims(_write(tmp_path, _llava(tiny.clip_vision(), tiny.llama_text(), vision_feature_layer=-2)))
    lang, vit = d.language, d.vision
    assert (lang.heads, lang.kv_heads, lang.head_dim, lang.tied, lang.qkv_bias) == (4, 2, 16, False, False)
    assert (vit.family, vit.class_token, vit.pre_norm, vit.act) == ("clip", True, True, "quick_gelu")
    assert (vit.layers, vit.total_layers) == (2, 3)  # hidden_states[-2]: the output of layer 2 of 3
    # 16 patches + class token, minus the class token ('default'); not image_seq_length (576)
    assert vit.tokens_per_item == 16
    assert d.image_token_id == tiny.IMAGE_TOKEN
    assert (d.projector.kind, d.projector.input_size, d.projector.hidden) == ("mlp2x_gelu", 32, 64)


def test_full_feature_selection_keeps_the_class_token(tmp_path):
    d = model_dims(_write(tmp_path, _llava(tiny.clip_vision(), tiny.llama_text(),
                                           vision_feature_select_strategy="full", vision_feature_layer=0 + 3)))
    assert d.vision.tokens_per_item == 17 and d.vision.layers == 3


def test_llava_siglip_qwen2(tmp_path):
    cfg = _llava(tiny.siglip_vision(), tiny.qwen2_text(), vision_feature_layer=-1,
                 vision_feature_select_strategy="full", tie_word_embeddings=True)
    d = model_dims(_write(tmp_path, cfg))
    assert (d.language.qkv_bias, d.language.tied) == (True, True)
    assert (d.vision.family, d.vision.class_token, d.vision.pre_norm) == ("siglip", False, False)
    assert (d.vision.tokens_per_item, d.vision.layers, d.vision.act) == (16, 2, "gelu_pytorch_tanh")


def test_causal_lm_alone(tmp_path):
    cfg = tiny.llama_text().to_dict()
    cfg["architectures"] = ["LlamaForCausalLM"]
    d = model_dims(_write(tmp_path, cfg))
    assert d.vision is None and d.language.layers == 2


def test_vision_tower_alone(tmp_path):
    cfg = tiny.clip_vision().to_dict()
    cfg["architectures"] = ["CLIPVisionModel"]
    v = vision_model_dims(_write(tmp_path, cfg))
    assert (v.layers, v.tokens_per_item) == (2, 16)


def test_llama3_rope_scaling_matches_transformers():
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = tiny.llama_text(rope_parameters=rope, hidden_size=256, num_attention_heads=2, num_key_value_heads=2)
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    got = rope_inv_freq("f", "", config.to_dict(), 128)
    assert torch.allclose(torch.tensor(got, dtype=torch.float32), want.float(), rtol=1e-6, atol=0)
    # 4.x spelling: rope_theta + rope_scaling
    old = {"rope_theta": 500000.0, "rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"}}
    assert rope_inv_freq("f", "", old, 128) == got


def test_default_and_linear_rope():
    base = rope_inv_freq("f", "", {"rope_theta": 10000.0}, 8)
    assert base == tuple(1 / 10000.0 ** (i / 8) for i in (0, 2, 4, 6))
    linear = rope_inv_freq("f", "", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, 8)
    assert all(math.isclose(a, b / 2) for a, b in zip(linear, base))


@pytest.mark.parametrize("change, field", [
    (lambda c: c.pop("architectures"), "architectures"),
    (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "architectures"),
    (lambda c: c.update(vision_feature_layer=[-2, -1]), "vision_feature_layer"),
    (lambda c: c["text_config"].update(model_type="gpt2"), "text_config.model_type"),
    (lambda c: c["text_config"].update(rope_parameters={"rope_type": "yarn", "rope_theta": 1.0}),
     "text_config.rope_parameters"),
    (lambda c: c["vision_config"].update(patch_size=5), "vision_config.patch_size"),
    (lambda c: c.update(image_token_index=1000), "image_token_index"),
])
def test_bad_configs_name_the_file_and_field(tmp_path, change, field):
    cfg = _llava(tiny.clip_vision(), tiny.llama_text())
    change(cfg)
    with pytest.raises(TopologyError) as e:
        model_dims(_write(tmp_path, cfg))
    assert e.value.source.endswith("config.json") and e.value.field == field


def test_missing_config_json(tmp_path):
    with pytest.raises(TopologyError, match="no config.json"):
        model_dims(str(tmp_path))
