"""Whisper as an audio LM's encoder part (modules.audio.hf): parity with transformers' WhisperEncoder
for every directory Whisper is saved as, export back to a directory transformers loads, `check`,
and bad input as one error line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mimo_runtime.launch.cli import main
from tests.hf import tiny

WHISPERS = ("WhisperForConditionalGeneration", "WhisperModel", "WhisperEncoder")


def _encoder(model):
    return model if type(model).__name__ == "WhisperEncoder" else model.get_encoder()


def _audio_lm(tmp_path, cls="WhisperForConditionalGeneration", audio=None, **lang):
    """(whisper, llama, topology path): a Whisper part and a Llama part whose tokenizer has `<audio>`."""
    whisper = tiny.save_whisper(tmp_path / "whisper", 1, cls)
    lm = tiny.save_lm_with_token(tmp_path / "lm", "<audio>")
    raw = {"modules": {"audio": {"kind": "encoder", "hf": str(tmp_path / "whisper"), **(audio or {})},
                       "language": {"kind": "language", "hf": str(tmp_path / "lm"), **lang}}}
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(raw))
    return whisper, lm, str(path)


def _model(topo_path):
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import colocated_plan
    from mimo_runtime.topology import load_topology

    plan = colocated_plan(load_topology(topo_path), 1)
    return build_model(plan, build_module_groups(plan, 60), 0, 7).eval()


def _errors(capsys, argv):
    capsys.readouterr()  # save_pretrained's progress bars
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("cls", WHISPERS)
def test_whisper_encoder_matches_transformers(tmp_path, cls):
    whisper, lm, topo = _audio_lm(tmp_path, cls)
    model = _model(topo)
    assert model.special_token_ids == {"audio": tiny.AUDIO_TOKEN}
    features = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(3))
    ids = torch.randint(0, tiny.AUDIO_TOKEN, (2, 20))
    with torch.no_grad():
        rows = model.modality_submodules["audio"].encoders["audio_tower"](input_features=features)
        want = _encoder(whisper)(input_features=features).last_hidden_state
        logits, _ = model(input_ids=ids, position_ids=torch.arange(20).expand(2, 20))
    assert rows.shape == (3 * 8, 32)  # frames / 2 rows per clip
    assert (rows - want.reshape(-1, 32)).abs().max() <= 1e-4
    assert (logits - lm(input_ids=ids).logits).abs().max() <= 1e-4


def test_audio_placeholders_take_the_projected_encoder_rows(tmp_path):
    """Each `<audio>` run of frames/2 tokens is replaced by one clip's projected Whisper rows."""
    whisper, lm, topo = _audio_lm(tmp_path)
    model = _model(topo)
    features = torch.randn(2, 8, 16)
    ids = torch.cat([torch.tensor([5, 6]), torch.full((16,), tiny.AUDIO_TOKEN), torch.tensor([7, 8])])[None]
    audio = model.modality_submodules["audio"]
    with torch.no_grad():
        logits, _ = model(input_ids=ids, position_ids=torch.arange(20)[None],
                          modality_inputs={"audio": {"audio_tower": {"input_features": features}}})
        projected = audio.input_projections[0](_encoder(whisper)(input_features=features).last_hidden_state)
        embeds = lm.get_input_embeddings()(ids.clamp(max=tiny.AUDIO_TOKEN - 1))
        embeds[0, 2:18] = projected.reshape(16, -1)
        want = lm(inputs_embeds=embeds).logits
    assert (logits - want).abs().max() <= 1e-4


def test_export_hf_carries_the_decoder_and_transformers_loads_it(tmp_path, capsys):
    from transformers import WhisperForConditionalGeneration

    whisper, _, topo = _audio_lm(tmp_path)
    out = tmp_path / "out"
    assert main(["export-hf", topo, "-o", str(out)]) == 0
    want, got = load_file(tmp_path / "whisper" / "model.safetensors"), load_file(out / "audio" / "model.safetensors")
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)  # decoder included
    assert sorted(load_file(out / "audio_projector.safetensors")) == [
        "multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias", "multi_modal_projector.linear_2.weight"]
    again = WhisperForConditionalGeneration.from_pretrained(out / "audio").eval()
    features = torch.randn(2, 8, 16)
    with torch.no_grad():
        assert torch.equal(again.get_encoder()(input_features=features).last_hidden_state,
                           whisper.get_encoder()(input_features=features).last_hidden_state)


def test_check_passes_on_an_audio_lm(tmp_path, capsys):
    _, _, topo = _audio_lm(tmp_path)
    capsys.readouterr()
    assert main(["check", topo]) == 0, capsys.readouterr().err


def test_a_missing_whisper_tensor_is_one_error_line(tmp_path, capsys):
    _, _, topo = _audio_lm(tmp_path)
    weights = tmp_path / "whisper" / "model.safetensors"
    tensors = load_file(weights)
    del tensors["model.encoder.layers.1.fc1.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    code, err = _errors(capsys, ["check", topo])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'whisper'}") and "layers.1.fc1.weight" in err[0]


def test_tp_that_does_not_divide_whisper_heads_is_one_error_line(tmp_path, capsys):
    _, _, topo = _audio_lm(tmp_path, audio={"parallel": {"tp": 3}})
    code, err = _errors(capsys, ["plan", topo])
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {topo}: modules.audio.parallel.tp: 3 does not divide the 4 audio attention "
                             f"heads (encoder_attention_heads)")


def test_a_language_part_without_an_audio_token_is_one_error_line(tmp_path, capsys):
    _, _, topo = _audio_lm(tmp_path)
    tiny.save_lm_with_token(tmp_path / "lm", "<image>")
    code, err = _errors(capsys, ["check", topo])
    assert code == 2 and len(err) == 1 and "no '<audio>' token" in err[0]



def test_whisper_split_over_two_pipeline_stages_matches_transformers(tmp_path):
    """pp2: stage 0 embeds and runs layer 0, stage 1 runs layer 1 and the final norm, each loading
    only its own layers (by their global numbers) from the directory."""
    from mimo_runtime.hf.config import parts_dims
    from mimo_runtime.hf.load import load_hf_weights
    from tests.hf.test_sliced_reads import _rank_models
    from tests.model.fakes import fake_grid

    whisper, _, _ = _audio_lm(tmp_path)
    dims = parts_dims(str(tmp_path / "lm"), audio_dir=str(tmp_path / "whisper"))
    grids = {"audio": fake_grid(0, pp=2), "language": fake_grid(2)}
    sources = {"audio": (str(tmp_path / "whisper"), ("audio",))}
    features = torch.randn(2, 8, 16)
    hidden = None
    with torch.no_grad():
        for stage, model in enumerate(_rank_models(dims, grids, 2)):
            load_hf_weights(model, sources)
            encoder = model.modality_submodules["audio"].encoders["audio_tower"]
            assert len(encoder.block.layers) == 1 and hasattr(encoder, "conv1") == (stage == 0)
            hidden = encoder(input_features=features) if stage == 0 else encoder(hidden_states=hidden)
        want = whisper.get_encoder()(input_features=features).last_hidden_state
    assert (hidden - want.reshape(-1, 32)).abs().max() <= 1e-4


def test_a_whisper_as_model_hf_is_one_error_line(tmp_path, capsys):
    tiny.save_whisper(tmp_path / "whisper")
    topo = tmp_path / "w.yaml"
    topo.write_text(json.dumps({"model": {"hf": str(tmp_path / "whisper")},
                                "modules": {"audio": {"kind": "encoder"}, "language": {"kind": "language"}}}))
    code, err = _errors(capsys, ["plan", str(topo)])
    assert code == 2 and len(err) == 1 and "'WhisperForConditionalGeneration', an audio encoder alone" in err[0]
