"""export-hf: without training the HF tensors come back bit for bit (unused ones carried through);
after the weights change, transformers loads the export and its logits equal ours."""

import json

import pytest
import torch
from safetensors import safe_open

from mimo_runtime.hf import from_pretrained
from mimo_runtime.hf.export import export_dir
from mimo_runtime.launch.cli import main
from tests.hf import tiny


def _tensors(directory):
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def _tokenizer(directory):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(tiny.VOCAB)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")))
    tok.save_pretrained(directory)


@pytest.mark.parametrize("build", [tiny.llava_clip_llama, tiny.llava_siglip_qwen2])
def test_export_without_training_reproduces_the_hf_tensors_bit_for_bit(tmp_path, capsys, build):
    src, out = tmp_path / "src", tmp_path / "out"
    build(src)
    _tokenizer(src)
    topo = tmp_path / "t.yaml"
    topo.write_text(json.dumps({"model": {"hf": str(src)}, "modules": {
        "images": {"kind": "encoder"}, "language": {"kind": "language", "parallel": {"tp": 2}}}}))
    assert main(["export-hf", str(topo), "-o", str(out)]) == 0
    assert "initial weights" in capsys.readouterr().out
    want, got = _tensors(src), _tensors(out)
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_export_carries_tensors_the_model_never_computes(tmp_path):
    tiny.llava_clip_llama(tmp_path)
    keys = set(_tensors(tmp_path))
    model = from_pretrained(tmp_path)
    # CLIP at vision_feature_layer -2 of 3 layers: layer 2 and post_layernorm are never built
    built = {n for n, _ in model.named_parameters()}
    assert not any(".layers.2." in n for n in built if "vision_tower" in n)
    assert {"vision_tower.encoder.layers.2.mlp.fc1.weight", "vision_tower.post_layernorm.weight"} <= keys


def test_export_after_training_loads_in_transformers_with_equal_logits(tmp_path):
    from transformers import LlavaForConditionalGeneration

    src, out = tmp_path / "src", tmp_path / "out"
    ref = tiny.llava_clip_llama(src)
    model = from_pretrained(src)
    ids, pos, px = tiny.image_batch(ref.config, images=2, seq=40)
    inputs = {"images": {"vision_tower": {"pixel_values": px}}}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logits, _ = model(input_ids=ids, position_ids=pos, modality_inputs=inputs)
    logits.logsumexp(-1).mean().backward()
    opt.step()
    export_dir(model, str(src), str(out))
    loaded = LlavaForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        ours, _ = model(input_ids=ids, position_ids=pos, modality_inputs=inputs)
        theirs = loaded(input_ids=ids, pixel_values=px).logits
        before = ref(input_ids=ids, pixel_values=px).logits
    assert (theirs - before).abs().max() > 1e-2  # the weights did change
    assert (ours - theirs).abs().max() <= 1e-4
