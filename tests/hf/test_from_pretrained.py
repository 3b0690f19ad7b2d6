"""from_pretrained(DIR): logits equal transformers' (fp32, max |diff| <= 1e-4) on tiny random models."""

import pytest
import torch

from mimo_runtime.errors import TopologyError
from mimo_runtime.hf import from_pretrained
from tests.hf import tiny

TOL = 1e-4


def _vlm_logits(ref, directory):
    ours = from_pretrained(directory)
    ids, pos, px = tiny.image_batch(ref.config, images=2, seq=40)
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=px).logits
        got, _ = ours(input_ids=ids, position_ids=pos,
                      modality_inputs={"images": {"vision_tower": {"pixel_values": px}}})
    return want, got


def test_llava_clip_llama_gqa_untied_logits_equal_transformers(tmp_path):
    ref = tiny.llava_clip_llama(tmp_path)
    want, got = _vlm_logits(ref, tmp_path)
    assert got.shape == want.shape and (got - want).abs().max() <= TOL


def test_llava_siglip_qwen2_tied_qkv_bias_logits_equal_transformers(tmp_path):
    ref = tiny.llava_siglip_qwen2(tmp_path)
    want, got = _vlm_logits(ref, tmp_path)
    assert got.shape == want.shape and (got - want).abs().max() <= TOL


def test_llama_lm_with_llama3_rope_logits_equal_transformers(tmp_path):
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    ref = tiny.save_llama(tmp_path, rope_parameters=rope)
    ours = from_pretrained(tmp_path)
    ids = torch.randint(0, tiny.VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        got, _ = ours(input_ids=ids, position_ids=torch.arange(48).expand(2, 48))
    assert (got - want).abs().max() <= TOL


def _resave(directory, change):
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_names_the_directory_and_tensor(tmp_path):
    tiny.save_llama(tmp_path)
    _resave(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(TopologyError, match=r"layers.1.mlp.up_proj.weight"):
        from_pretrained(tmp_path)


def test_shape_mismatch_names_the_file_and_tensor(tmp_path):
    tiny.save_llama(tmp_path)
    _resave(tmp_path, lambda t: t.update({"model.norm.weight": torch.ones(63)}))
    with pytest.raises(TopologyError) as e:
        from_pretrained(tmp_path)
    assert e.value.source.endswith("model.safetensors") and e.value.field == "tensor model.norm.weight"
    assert "[63]" in e.value.message and "[64]" in e.value.message
