"""`model: {hf: DIR}` in a topology: config.json checked at load time, one `error:` line, exit 2."""

import json

import pytest

from mimo_runtime.launch.cli import main
from tests.hf import tiny


def _config_dir(tmp_path, arch="LlavaForConditionalGeneration", **text):
    from transformers import LlavaConfig

    if arch == "LlavaForConditionalGeneration":
        cfg = LlavaConfig(vision_config=tiny.clip_vision(), text_config=tiny.llama_text(**text),
                          image_token_index=tiny.IMAGE_TOKEN).to_dict()
    elif arch == "CLIPVisionModel":
        cfg = tiny.clip_vision().to_dict()
    else:
        cfg = tiny.llama_text(**text).to_dict()
    cfg["architectures"] = [arch]
    d = tmp_path / "hfdir"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _topology(tmp_path, model, lang_tp=1, encoders=("images",)):
    modules = {"language": {"kind": "language", "parallel": {"tp": lang_tp}}}
    modules.update({e: {"kind": "encoder"} for e in encoders})
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"model": model, "modules": modules}))  # JSON is YAML
    return str(path)


def _errors(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_plan_of_an_hf_topology_needs_no_data(tmp_path, capsys):
    d = _config_dir(tmp_path)
    code = main(["plan", _topology(tmp_path, {"hf": str(d)}, lang_tp=2), "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["modules"]["language"]["tp"] == 2 and plan["world_size"] == 3


def test_tp_that_does_not_divide_kv_heads_is_one_error_line(tmp_path, capsys):
    d = _config_dir(tmp_path, num_attention_heads=4, num_key_value_heads=2)
    topo = _topology(tmp_path, {"hf": str(d)}, lang_tp=4)
    code, err = _errors(capsys, ["plan", topo])
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {topo}: modules.language.parallel.tp: 4 does not divide the 2 kv heads")
    assert str(d / "config.json") in err[0]


def test_unsupported_architecture_names_config_json(tmp_path, capsys):
    d = _config_dir(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    code, err = _errors(capsys, ["plan", _topology(tmp_path, {"hf": str(d)})])
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {d / 'config.json'}: architectures: 'GPT2LMHeadModel' is not supported")


def test_missing_config_json(tmp_path, capsys):
    code, err = _errors(capsys, ["plan", _topology(tmp_path, {"hf": str(tmp_path / "nowhere")})])
    assert code == 2 and len(err) == 1 and "config.json: no config.json" in err[0]


@pytest.mark.parametrize("arch, encoders, words", [
    ("LlamaForCausalLM", ("images",), "needs 0 encoder module(s), it has 1"),
    ("LlavaForConditionalGeneration", (), "needs 1 encoder module(s), it has 0"),
    ("CLIPVisionModel", ("images",), "a vision tower alone"),
])
def test_modules_must_match_the_architecture(tmp_path, capsys, arch, encoders, words):
    d = _config_dir(tmp_path, arch)
    code, err = _errors(capsys, ["plan", _topology(tmp_path, {"hf": str(d)}, encoders=encoders)])
    assert code == 2 and len(err) == 1 and words in err[0]


def test_factory_and_hf_together_are_refused(tmp_path, capsys):
    d = _config_dir(tmp_path)
    code, err = _errors(capsys, ["plan", _topology(tmp_path, {"hf": str(d), "factory": "a.b:c"})])
    assert code == 2 and err[0].endswith("model: give either factory (your model's function) or hf (an HF model "
                                         "directory), not both")
