"""HF weights with LLaVA-format data: the data section takes the tokenizer, length, placeholder id, rows
per image and image processor from the HF directory; lr-0 training -> checkpoint -> export-hf gives
the HF tensors back bit for bit, and a trained checkpoint's export loads in transformers with our
logits. One 3-rank launch (images on its own rank, language tp2) trains both runs."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from mimo_runtime.data.llava import facts_for, index_topology, model_facts
from mimo_runtime.errors import TopologyError
from mimo_runtime.launch.cli import main
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.topology import load_topology
from mimo_runtime.train.loop import RunConfig
from tests.data.llava_files import SPECIAL, TEMPLATE, WORDS, write_dataset
from tests.data.rank_fns import train_runs
from tests.hf import tiny

MODULES = {"images": {"kind": "encoder"}, "language": {"kind": "language", "parallel": {"tp": 2}}}
ROWS = 16  # CLIP 16x16 / patch 4 = 16 patches + class token, `default` drops the class token


def hf_tokenizer(directory) -> None:
    """The LLaVA test vocabulary padded so that `<image>` is the model's image_token_index (99)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [t for t in SPECIAL + WORDS if t != "<image>"]
    words += [f"w{i}" for i in range(tiny.IMAGE_TOKEN - len(words))]
    vocab = {t: i for i, t in enumerate(words)}
    vocab["<image>"] = tiny.IMAGE_TOKEN
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", additional_special_tokens=[t for t in SPECIAL[3:]])
    fast.chat_template = TEMPLATE
    fast.save_pretrained(directory)


def hf_dir(directory):
    """A tiny LLaVA (CLIP + Llama, SwiGLU, GQA) with its tokenizer and a CLIP image processor."""
    from transformers import CLIPImageProcessor

    model = tiny.llava_clip_llama(directory)
    hf_tokenizer(directory)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(directory)
    return model


def write_topology(path, src, data, lr: float):
    path.write_text(json.dumps({"model": {"hf": str(src)}, "modules": MODULES,
                                "data": {"format": "llava", "path": data["path"], "image_root": data["image_root"]},
                                "train": {"global_batch": 4, "micro_batch": 2, "lr": lr}}))
    return str(path)


def tensors(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(directory, name), "pt") as f:
                out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One launch, two runs of one step from the HF weights on the LLaVA data: lr 0 and lr 0.05."""
    root = tmp_path_factory.mktemp("hf_data")
    src = root / "hf"
    ref = hf_dir(src)
    data = write_dataset(str(root / "data"), n=8)
    topos = {name: write_topology(root / f"{name}.yaml", src, data, lr) for name, lr in (("lr0", 0.0),
                                                                                         ("trained", 0.05))}
    runs = []
    for name, path in topos.items():
        topo = load_topology(path)
        index_topology(topo)  # what the launcher does before starting ranks
        runs.append((topo, RunConfig(steps=1, seed=3, nproc=3, timeout_s=30, progress=False,
                                     checkpoint_dir=str(root / name / "ckpt"))))
    results = spawn(train_runs, 3, args=(runs,), timeout_s=300, collective_timeout_s=30)
    return root, src, ref, topos, results


def test_data_defaults_come_from_the_hf_directory(tmp_path):
    hf_dir(tmp_path / "hf")
    data = write_dataset(str(tmp_path / "data"), n=3)
    topo = load_topology(write_topology(tmp_path / "t.yaml", tmp_path / "hf", data, 0.0))
    assert topo.data.tokenizer == str(tmp_path / "hf")
    assert model_facts(topo) == (256, ROWS, tiny.IMAGE_TOKEN, (3, 16, 16))
    assert facts_for(topo, "train").seq_length == 256  # the config's max_position_embeddings
    index = index_topology(topo)["train"]
    # each <image> expands to the vision tower's rows
    assert [e.length for e in index.entries][2] - [e.length for e in index.entries][0] >= 2 * ROWS - 2


def test_a_longer_seq_length_than_the_hf_model_is_an_error(tmp_path):
    hf_dir(tmp_path / "hf")
    data = write_dataset(str(tmp_path / "data"), n=3)
    path = tmp_path / "t.yaml"
    write_topology(path, tmp_path / "hf", data, 0.0)
    raw = json.loads(path.read_text())
    raw["data"]["seq_length"] = 512
    path.write_text(json.dumps(raw))
    with pytest.raises(TopologyError, match=r"data\.seq_length: 512 is longer than the model's 256"):
        load_topology(str(path))


def test_lr0_step_then_export_of_its_checkpoint_gives_the_hf_tensors_bit_for_bit(trained, capsys):
    root, src, _, topos, results = trained
    assert results[0][0][0].checkpoints  # the run saved its step
    out = root / "export_lr0"
    assert main(["export-hf", topos["lr0"], "--checkpoint-dir", str(root / "lr0" / "ckpt"), "-o", str(out)]) == 0
    assert "checkpoint step_" in capsys.readouterr().out
    want, got = tensors(src), tensors(out)
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_trained_checkpoint_exports_to_transformers_with_our_logits(trained):
    from transformers import LlavaForConditionalGeneration

    from mimo_runtime.launch.commands.export_hf import _load_model_tensors, _whole_model
    from mimo_runtime.train.checkpoint import latest_checkpoint

    root, src, ref, topos, _ = trained
    out = root / "export_trained"
    ckpt = str(root / "trained" / "ckpt")
    assert main(["export-hf", topos["trained"], "--checkpoint-dir", ckpt, "-o", str(out)]) == 0
    ours = _whole_model(load_topology(topos["trained"]))
    _load_model_tensors(ours, latest_checkpoint(ckpt))
    loaded = LlavaForConditionalGeneration.from_pretrained(out).eval()
    ids, pos, px = tiny.image_batch(ref.config, images=2, seq=40)
    with torch.no_grad():
        got, _ = ours(input_ids=ids, position_ids=pos, modality_inputs={"images": {"vision_tower": {"pixel_values": px}}})
        theirs = loaded(input_ids=ids, pixel_values=px).logits
        before = ref(input_ids=ids, pixel_values=px).logits
    assert (theirs - before).abs().max() > 1e-3  # the step changed the weights
    assert (got - theirs).abs().max() <= 1e-4


def check_case(tmp_path, records=None):
    """An hf + LLaVA-data topology (`records` replace the default dataset); the topology file's path."""
    hf_dir(tmp_path / "hf")
    data = write_dataset(str(tmp_path / "data"), n=4, records=records)
    return write_topology(tmp_path / "t.yaml", tmp_path / "hf", data, 0.0)


def test_check_passes_an_hf_model_with_llava_data(tmp_path, capsys):
    assert main(["check", check_case(tmp_path)]) == 0
    assert "data OK" in capsys.readouterr().out


def test_check_reports_the_launchers_data_error_for_an_hf_model(tmp_path, capsys):
    from mimo_runtime.data.records import DataError
    from tests.data.llava_files import record

    bad = record(1, 0)
    bad["conversations"][0]["value"] = "<image> say hello"  # a placeholder without its image
    path = check_case(tmp_path, [record(0, 1), bad])
    with pytest.raises(DataError) as launcher:
        index_topology(load_topology(path))
    capsys.readouterr()  # the fixture's save_pretrained progress
    assert main(["check", path]) == 2
    assert capsys.readouterr().err.strip() == f"error: {launcher.value}"
    assert ".jsonl:2: 1 <image> placeholder(s) but 0 image(s)" in str(launcher.value)


def test_check_reports_every_missing_tensor_and_shape_mismatch_of_the_hf_dir(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    path = check_case(tmp_path)
    weights = tmp_path / "hf" / "model.safetensors"
    t = load_file(weights)
    t.pop("language_model.model.layers.1.mlp.up_proj.weight")
    t["multi_modal_projector.linear_1.weight"] = t["multi_modal_projector.linear_1.weight"][:, :5].contiguous()
    save_file(t, weights, metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert any("missing" in line and "layers.1.mlp.up_proj.weight" in line for line in err)
    assert any("multi_modal_projector.linear_1.weight: shape [64, 5] does not match the model's [64, 32]" in line
               for line in err)


def test_parts_take_the_language_directorys_tokenizer_and_the_towers_rows(tmp_path):
    from transformers import CLIPVisionModel, LlamaForCausalLM

    CLIPVisionModel(tiny.clip_vision()).save_pretrained(tmp_path / "vision")
    LlamaForCausalLM(tiny.llama_text(max_position_embeddings=128)).save_pretrained(tmp_path / "lm")
    hf_tokenizer(tmp_path / "lm")
    data = write_dataset(str(tmp_path / "data"), n=3)
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"modules": {"images": {"kind": "encoder", "hf": str(tmp_path / "vision")},
                                            "language": {"kind": "language", "hf": str(tmp_path / "lm")}},
                                "data": {"format": "llava", "path": data["path"], "image_root": data["image_root"]}}))
    topo = load_topology(str(path))
    assert topo.data.tokenizer == str(tmp_path / "lm")
    # a separately saved CLIP is read as LLaVA-1.5 reads it: class token dropped
    assert model_facts(topo) == (128, ROWS, tiny.IMAGE_TOKEN, (3, 16, 16))
    assert len(index_topology(topo)["train"].entries) == 3


def test_a_tokenizer_whose_image_id_is_not_image_token_index_is_a_data_error(tmp_path):
    from mimo_runtime.data.records import DataError

    hf_dir(tmp_path / "hf")
    data = write_dataset(str(tmp_path / "data"), n=3)  # its own tokenizer: <image> is 3
    path = tmp_path / "t.yaml"
    write_topology(path, tmp_path / "hf", data, 0.0)
    raw = json.loads(path.read_text())
    raw["data"]["tokenizer"] = data["tokenizer"]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"<image> token has id 3; the model's image placeholder id is 99"):
        index_topology(load_topology(str(path)))
