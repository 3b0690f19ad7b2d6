"""Audio in LLaVA records: WAV files read with the standard library, features from the Whisper feature
extractor, `<audio>` expanded to the encoder's rows, and bad audio as one `FILE:LINE:` error."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mimo_runtime.data.audio_files import read_wav
from mimo_runtime.data.llava import AUDIO, LlavaDataset, facts_for, index_topology
from mimo_runtime.data.records import DataError
from mimo_runtime.errors import TopologyError
from mimo_runtime.model.inputs import AUDIO_SHAPE, SPECIAL_TOKEN_IDS
from mimo_runtime.topology import topology_from_dict

from tests.data.audio_files import EXTRACTOR, RATE, clip, record, write_av_dataset, write_extractor, write_wav

MODULES = {"images": {"kind": "encoder"}, "audio": {"kind": "encoder"}, "language": {"kind": "language"}}
ROWS = 8  # tiny-avlm: 32 frames, stride 4


def topo(files, model="tiny-avlm", **data):
    modules = MODULES if model == "tiny-avlm" else {k: v for k, v in MODULES.items() if k != "audio"}
    return topology_from_dict({"model": model, "modules": modules, "data": {"format": "llava", **files, **data}},
                              source="<test>")


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_files_of_every_pcm_width_read_back_as_mono_floats(tmp_path, width, channels):
    samples = clip(3, seconds=0.05)
    path = str(tmp_path / "a.wav")
    write_wav(path, samples, width=width, channels=channels)
    got, rate = read_wav(path)
    assert rate == RATE and got.dtype == np.float32 and got.shape == samples.shape
    assert np.abs(got - samples).max() <= 2.0 / 2 ** (8 * width - 1) + 1e-7  # quantization, float32


def test_audio_features_are_the_whisper_extractors_and_placeholders_expand_to_rows(tmp_path):
    from transformers import WhisperFeatureExtractor

    files = write_av_dataset(str(tmp_path), records=[record(0, 1, 1), record(1, 0, 0), record(2, 2, 1)])
    t = topo(files)
    data = LlavaDataset(index_topology(t)["train"], facts_for(t, "train"))
    extractor = WhisperFeatureExtractor(**EXTRACTOR)
    for i, clips in enumerate([1, 0, 1]):
        assert data.num_items(i, AUDIO) == clips
        (key, inputs), = data.modality(i, AUDIO).items()
        features = inputs["features"]
        assert features.shape == (clips, *AUDIO_SHAPE)
        if clips:
            samples, _ = read_wav(os.path.join(files["image_root"], f"clip{i}.wav"))
            want = extractor(samples, sampling_rate=RATE, return_tensors="np")["input_features"]
            np.testing.assert_array_equal(features.numpy(), want)
        tokens = data.tokens(i)
        audio = tokens["input_ids"] == SPECIAL_TOKEN_IDS[AUDIO]
        assert int(audio.sum()) == ROWS * clips and not tokens["loss_mask"][audio].any()
    assert data.cost(2) == (2 * 4 + ROWS, data.index.entries[2].length)


def _bad(tmp_path, case):
    """(files, the bad record's line, expected message start) with record 2 of 3 broken by `case`."""
    recs = [record(0, 0, 1), record(1, 1, 1), record(2, 0, 0)]
    if case == "placeholders_differ":
        recs[1] = {**recs[1], "audio": ["clip1.wav", "clip1.wav"]}
    files = write_av_dataset(str(tmp_path), records=recs)
    wav = os.path.join(files["image_root"], "clip1.wav")
    message = {"missing": f"missing audio {wav}", "unreadable": f"unreadable audio {wav}",
               "rate": f"audio {wav} is sampled at 8000 Hz; the feature extractor takes {RATE} Hz",
               "placeholders_differ": "1 <audio> placeholder(s) but 2 audio clip(s)"}[case]
    if case == "missing":
        os.remove(wav)
    elif case == "unreadable":
        with open(wav, "wb") as f:
            f.write(b"RIFF\x10\x00\x00\x00WAVEnot really")
    elif case == "rate":
        write_wav(wav, clip(1), rate=8000)
    return files, 2, message


@pytest.mark.parametrize("case", ["missing", "unreadable", "rate", "placeholders_differ"])
def test_bad_audio_is_one_error_naming_file_and_line(tmp_path, case):
    files, line, message = _bad(tmp_path, case)
    with pytest.raises(DataError) as e:
        index_topology(topo(files))
    assert str(e.value).startswith(f"{files['path']}:{line}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_on_error_skip_leaves_bad_audio_records_out(tmp_path):
    files, line, _ = _bad(tmp_path, "missing")
    index = index_topology(topo(files, on_error="skip"))["train"]
    assert [e.line for e in index.entries] == [1, 3] and index.skipped == 1


def test_audio_on_a_model_without_an_audio_encoder_is_a_data_error(tmp_path):
    files = write_av_dataset(str(tmp_path), records=[record(0, 1, 0), record(1, 0, 1)])
    with pytest.raises(DataError, match=rf"^{files['path']}:2: the record has audio clips but the model has no "
                                        r"audio encoder"):
        index_topology(topo({k: v for k, v in files.items() if k != "feature_extractor"}, model="tiny-vlm"))


def test_the_feature_extractor_must_be_whispers_and_fit_the_audio_encoder(tmp_path):
    files = write_av_dataset(str(tmp_path), n=3)
    with pytest.raises(DataError, match=r"no preprocessor_config.json: audio needs a WhisperFeatureExtractor"):
        index_topology(topo({**files, "feature_extractor": files["tokenizer"]}))
    wrong = write_extractor(str(tmp_path / "wrong"), feature_size=20)
    with pytest.raises(DataError, match=r"preprocessor_config.json: gives audio features of shape \(20, 32\)"):
        index_topology(topo({**files, "feature_extractor": wrong}))
    with pytest.raises(TopologyError) as e:
        topo({**files, "feature_extractor": str(tmp_path / "nowhere")})
    assert e.value.field == "data.feature_extractor"


def test_cli_reports_bad_audio_in_one_line_exit_2(tmp_path):
    files, line, message = _bad(tmp_path, "rate")
    path = tmp_path / "t.yaml"
    path.write_text("model: tiny-avlm\ndata: {format: llava, path: train.jsonl, image_root: media, "
                    "tokenizer: tokenizer, feature_extractor: extractor}\nmodules:\n  images: {kind: encoder}\n"
                    "  audio: {kind: encoder}\n  language: {kind: language}\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, "-m", "mimo_runtime.launch.cli", "check", str(path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [f"error: {files['path']}:{line}: {message}"]
