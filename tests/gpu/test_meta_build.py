"""Every module of every preset and HF family builds on the device it is given: on `meta`, a tensor
that some code path creates on CPU instead would show up as a CPU parameter or buffer. This is the
CPU-side check of "parameters on the device" for CUDA runs (build_model's `device`, model/factory.py):
meta and cuda take the same path."""

import json

import pytest
import torch

from mimo_runtime.model.meta import build_on_meta
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.topology.presets import PRESETS, REAL_SIZE


def _topology(model, encoders):
    modules = {"language": {"kind": "language", "ranks": 1}}
    modules.update({name: {"kind": "encoder", "modality": name, "ranks": 1} for name in encoders})
    return topology_from_dict({"name": "meta", "model": model, "modules": modules,
                               "train": {"global_batch": 2, "micro_batch": 2}})


@pytest.fixture
def no_final_move(monkeypatch):
    """build_model moves the built model to the device at the end, which would hide a tensor some
    layer created on CPU: check what construction itself placed."""
    import mimo_runtime.model.mimo as mimo

    monkeypatch.setattr(mimo.MimoModel, "to", lambda self, *args, **kwargs: self)


def _off_meta(model):
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return [(name, t.device.type) for name, t in tensors if t.device.type != "meta"]


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - REAL_SIZE))  # real sizes: planned, never built
def test_every_preset_builds_every_module_on_meta(preset, no_final_move):
    model, plan = build_on_meta(_topology(preset, PRESETS[preset].encoders))
    assert set(model.role.modules) == set(plan.modules)  # every module built, not just some
    assert sum(p.numel() for p in model.parameters()) > 0
    assert _off_meta(model) == []


def _hf_dir(tmp_path, name, config):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config.to_dict()))
    return str(d)


def _llava(vision, text, **kw):
    from transformers import LlavaConfig

    from tests.hf.tiny import IMAGE_TOKEN

    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                       architectures=["LlavaForConditionalGeneration"], **kw)


def test_every_hf_family_builds_on_meta(tmp_path, no_final_move):
    """CLIP + Llama (GQA, untied), SigLIP + Qwen2 (tied, qkv bias), a Llama LM: config.json only,
    nothing read on meta (hf/load.py)."""
    from tests.hf import tiny

    llama = tiny.llama_text(architectures=["LlamaForCausalLM"])
    dirs = {
        "clip-llama": _hf_dir(tmp_path, "clip-llama", _llava(tiny.clip_vision(), tiny.llama_text(),
                                                             vision_feature_layer=-2,
                                                             vision_feature_select_strategy="default")),
        "siglip-qwen2": _hf_dir(tmp_path, "siglip-qwen2", _llava(tiny.siglip_vision(), tiny.qwen2_text(),
                                                                 vision_feature_layer=-1,
                                                                 vision_feature_select_strategy="full",
                                                                 tie_word_embeddings=True)),
        "llama": _hf_dir(tmp_path, "llama", llama),
    }
    for name, d in dirs.items():
        model, plan = build_on_meta(_topology({"hf": d}, [] if name == "llama" else ["images"]))
        assert set(model.role.modules) == set(plan.modules), name
        assert _off_meta(model) == [], name


def test_build_model_moves_what_a_layer_placed_on_cpu(monkeypatch):
    """A layer that allocates on CPU explicitly (TE's wrappers under use_cpu_initialization do) still
    ends on the given device: build_model moves the built model."""
    import mimo_runtime.model.mimo as mimo

    real = mimo.MimoModel.__init__

    def with_cpu_buffer(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.register_buffer("placed_on_cpu", torch.zeros(3, device="cpu"))

    monkeypatch.setattr(mimo.MimoModel, "__init__", with_cpu_buffer)
    model, _ = build_on_meta(_topology("tiny-lm", []))
    assert model.placed_on_cpu.device.type == "meta"
    assert _off_meta(model) == []
