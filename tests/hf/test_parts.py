"""modules.NAME.hf: a vision tower and a language model saved apart (LLaVA stage 1); the projector
between them starts from keyed init, the image token is the tokenizer's `<image>`."""

import json

import pytest
import torch

from mimo_runtime.launch.cli import main
from tests.hf import tiny


def _parts(tmp_path, vision="clip"):
    from tokenizers import AddedToken, Tokenizer, models
    from transformers import CLIPVisionModel, LlamaForCausalLM, PreTrainedTokenizerFast, SiglipVisionModel

    cls, cfg = (CLIPVisionModel, tiny.clip_vision()) if vision == "clip" else (SiglipVisionModel, tiny.siglip_vision())
    tower = tiny.randomize(cls(cfg), 1).eval()
    tower.save_pretrained(tmp_path / "vision")
    lm = tiny.randomize(LlamaForCausalLM(tiny.llama_text()), 2).eval()
    lm.save_pretrained(tmp_path / "lm")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {f"t{i}": i for i in range(tiny.IMAGE_TOKEN)}, unk_token="t0")))
    tok.add_special_tokens({"additional_special_tokens": [AddedToken("<image>", special=True)]})
    tok.save_pretrained(tmp_path / "lm")
    return tower, lm


def _topology(tmp_path, **lang):
    raw = {"modules": {"images": {"kind": "encoder", "hf": str(tmp_path / "vision")},
                       "language": {"kind": "language", "hf": str(tmp_path / "lm"), **lang}}}
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(raw))
    return str(path)


def _model(topo_path):
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import colocated_plan
    from mimo_runtime.topology import load_topology

    plan = colocated_plan(load_topology(topo_path), 1)
    return build_model(plan, build_module_groups(plan, 60), 0, 7).eval()


@pytest.mark.parametrize("vision, layer, drop", [("clip", -2, 1), ("siglip", -1, 0)])
def test_parts_load_into_their_modules(tmp_path, vision, layer, drop):
    tower, lm = _parts(tmp_path, vision)
    model = _model(_topology(tmp_path))
    assert model.special_token_ids == {"images": tiny.IMAGE_TOKEN}
    px = torch.randn(2, 3, 16, 16)
    ids = torch.randint(0, tiny.IMAGE_TOKEN, (2, 20))
    with torch.no_grad():
        rows = model.modality_submodules["images"].encoders["vision_tower"](pixel_values=px)
        want = tower(pixel_values=px, output_hidden_states=True).hidden_states[layer][:, drop:]
        logits, _ = model(input_ids=ids, position_ids=torch.arange(20).expand(2, 20))
        want_logits = lm(input_ids=ids).logits
    assert (rows - want.reshape(-1, want.size(-1))).abs().max() <= 1e-4
    assert (logits - want_logits).abs().max() <= 1e-4


def test_parts_export_as_their_own_directories(tmp_path, capsys):
    from safetensors.torch import load_file

    _parts(tmp_path)
    out = tmp_path / "out"
    assert main(["export-hf", _topology(tmp_path), "-o", str(out)]) == 0
    for part, src in (("images", "vision"), ("language", "lm")):
        want, got = load_file(tmp_path / src / "model.safetensors"), load_file(out / part / "model.safetensors")
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    projector = load_file(out / "images_projector.safetensors")
    assert sorted(projector) == ["multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.weight",
                                 "multi_modal_projector.linear_2.bias", "multi_modal_projector.linear_2.weight"]


def test_a_vision_tower_as_the_language_module_is_one_error_line(tmp_path, capsys):
    _parts(tmp_path)
    topo = tmp_path / "t.yaml"
    topo.write_text(json.dumps({"modules": {"images": {"kind": "encoder", "hf": str(tmp_path / "vision")},
                                            "language": {"kind": "language", "hf": str(tmp_path / "vision")}}}))
    capsys.readouterr()  # save_pretrained's progress bars
    assert main(["plan", str(topo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {topo}: modules.language.hf: ")
    assert "'CLIPVisionModel'; a language module needs one of LlamaForCausalLM" in err[0]
