"""Port of upstream tests/unit_tests/models/mimo/test_mimo_audio_submodules.py to mimo_runtime.model on CPU.

Adapted only for CPU: tiny configs of the same HF model classes (Whisper, WavLM, AST; upstream
builds their default sizes), the hidden size read from each config (upstream's table has the
default sizes), no `modelopt` importorskip, no CUDA seed.
"""

import math
import random

import numpy as np
import pytest
import torch

from mimo_runtime.model import AudioModalitySubmodules
from tests.model.upstream.cpu import tiny_whisper_config

AUDIO_MODEL_PARAMS = {
    "openai/whisper-base": {"sample_rate": 16000, "window_stride": 0.01, "encoder_down_sampling": 2,
                            "max_length_seconds": 30.0},
    "patrickvonplaten/wavlm-libri-clean-100h-base-plus": {"sample_rate": 16000, "window_stride": 0.02,
                                                          "encoder_down_sampling": 1, "max_length_seconds": 30.0},
    "MIT/ast-finetuned-audioset-10-10-0.4593": {
        "sample_rate": 16000, "window_stride": 0.01, "max_spectrogram_length": 1024, "num_mel_bins": 128,
        "patch_size": 16, "time_stride": 10, "frequency_stride": 10, "max_length_seconds": 10.0},
}
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


class AudioEncoderWrapper(torch.nn.Module):
    """Generic wrapper for audio encoder models that extracts last_hidden_state."""

    def __init__(self, encoder, model_type="whisper"):
        super().__init__()
        self.encoder = encoder
        self.model_type = model_type

    def forward(self, input_features, seq_lengths=None):
        with torch.no_grad():
            hidden = self.encoder(input_features).last_hidden_state  # [b, s, h]
            if seq_lengths is not None:
                mask = torch.arange(hidden.shape[1])[None, :] < seq_lengths[:, None]
                hidden = hidden[mask]
            return hidden


def calculate_num_mel_frames(audio_length, sample_rate, window_stride, window_length=None):
    hop_length_samples = int(window_stride * sample_rate)
    if window_length is None:
        return math.ceil((audio_length + 1) / hop_length_samples)
    window_length_samples = int(window_length * sample_rate)
    return math.floor((audio_length - window_length_samples) / hop_length_samples) + 1


class TestAudioSubmodule:
    def setup_method(self, method, model_name="openai/whisper-base"):
        from transformers import (ASTConfig, ASTFeatureExtractor, ASTModel, Wav2Vec2FeatureExtractor, WavLMConfig,
                                  WavLMModel, WhisperFeatureExtractor, WhisperModel)

        random.seed(123)
        params = AUDIO_MODEL_PARAMS[model_name]
        self.sample_rate = params["sample_rate"]
        self.window_stride = params.get("window_stride", 0.01)
        self.encoder_down_sampling = params.get("encoder_down_sampling", 1)
        self.max_spectrogram_length = params.get("max_spectrogram_length")
        self.num_mel_bins = params.get("num_mel_bins")
        self.patch_size = params.get("patch_size")
        self.time_stride = params.get("time_stride")
        self.frequency_stride = params.get("frequency_stride")
        self.audio_token_id = 50000
        if "whisper" in model_name:
            self.model_type = "whisper"
            model = WhisperModel(tiny_whisper_config(d_model=32, encoder_attention_heads=2,
                                                     decoder_attention_heads=2))
            raw_encoder = model.encoder
            self.processor = WhisperFeatureExtractor()
        elif "wavlm" in model_name:
            self.model_type = "wavlm"
            model = WavLMModel(WavLMConfig(**TINY, conv_dim=(32,) * 7, num_conv_pos_embedding_groups=2,
                                           num_buckets=32))
            raw_encoder = model
            self.processor = Wav2Vec2FeatureExtractor()
        else:
            self.model_type = "ast"
            model = ASTModel(ASTConfig(**TINY, num_mel_bins=self.num_mel_bins, patch_size=self.patch_size,
                                       fstride=self.frequency_stride, tstride=self.time_stride))
            raw_encoder = model
            self.processor = ASTFeatureExtractor()
        self.encoder = AudioEncoderWrapper(raw_encoder, self.model_type)
        self.d_model = getattr(model.config, "d_model", None) or model.config.hidden_size
        self.projection = torch.nn.Linear(self.d_model, 768)
        self.audio_module = AudioModalitySubmodules(encoders={"encoder": self.encoder},
                                                    input_projections=[self.projection])

    def _create_sample_audio(self, duration_seconds):
        t = np.linspace(0, duration_seconds, int(duration_seconds * self.sample_rate), endpoint=False)
        return torch.tensor(0.5 * np.sin(2 * np.pi * 440.0 * t), dtype=torch.float32).unsqueeze(0)

    def _calculate_seq_length(self, audio_tensor):
        audio_length = audio_tensor.shape[1]
        if self.model_type == "whisper":
            frames = calculate_num_mel_frames(audio_length, self.sample_rate, self.window_stride)
            length = math.ceil(frames / self.encoder_down_sampling)
        elif self.model_type == "wavlm":
            length = audio_length
            for kernel, stride in zip([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]):
                length = (length - kernel) // stride + 1
        else:
            freq = (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1
            time = (self.max_spectrogram_length - self.patch_size) // self.time_stride + 1
            length = freq * time + 2  # + cls and distillation tokens
        return max(1, int(length))

    def _create_batch(self, batch_size=3, min_duration=1.0, max_duration=1.5):
        segments = [random.randint(1, 4) for _ in range(batch_size)]
        audio = [self._create_sample_audio(random.uniform(min_duration, max_duration)) for _ in range(sum(segments))]
        kwargs = {"sampling_rate": self.sample_rate, "return_tensors": "pt"}
        if self.model_type == "wavlm":
            kwargs["padding"] = "longest"
        processed = self.processor([a.squeeze().numpy() for a in audio], **kwargs)
        features = processed.input_features if self.model_type == "whisper" else processed.input_values
        seq_lengths = torch.tensor([self._calculate_seq_length(a) for a in audio], dtype=torch.long)
        max_seq_len = 4096
        input_ids = torch.zeros((batch_size, max_seq_len), dtype=torch.long)
        segment = 0
        for i in range(batch_size):
            pos = 0
            for _ in range(segments[i]):
                text_len = random.randint(3, 8)
                input_ids[i, pos:pos + text_len] = torch.randint(1, 30000, (text_len,))
                pos += text_len
                audio_len = seq_lengths[segment].item()
                input_ids[i, pos:pos + audio_len] = self.audio_token_id
                pos += audio_len
                segment += 1
            text_len = random.randint(3, 8)
            if pos + text_len < max_seq_len:
                input_ids[i, pos:pos + text_len] = torch.randint(1, 30000, (text_len,))
        return {"audio": features, "input_ids": input_ids, "modality_seq_lengths": {"audio": seq_lengths}}

    @pytest.mark.parametrize("model_name,batch_size", [
        pytest.param("openai/whisper-base", 1, id="whisper-base-batch1"),
        pytest.param("patrickvonplaten/wavlm-libri-clean-100h-base-plus", 1, id="wavlm-batch1"),
        pytest.param("MIT/ast-finetuned-audioset-10-10-0.4593", 1, id="ast-batch1"),
        pytest.param("openai/whisper-base", 2, id="whisper-base-batch2"),
        pytest.param("patrickvonplaten/wavlm-libri-clean-100h-base-plus", 2, id="wavlm-batch2"),
        pytest.param("MIT/ast-finetuned-audioset-10-10-0.4593", 2, id="ast-batch2"),
    ])
    def test_multiple_audio_encoders(self, model_name, batch_size):
        self.setup_method(None, model_name=model_name)
        batch = self._create_batch(batch_size=batch_size, min_duration=1.0, max_duration=3.0)
        seq_lengths = batch['modality_seq_lengths']['audio']
        embeddings = self.audio_module.forward({"encoder": {"input_features": batch['audio'],
                                                            "seq_lengths": seq_lengths}})
        assert embeddings.shape[0] == (batch['input_ids'] == self.audio_token_id).sum().item()
        assert embeddings.shape[1] == 768


class TestAudioSubmoduleStageAware:
    def test_stage_aware_forward(self):
        hidden_size, projection_size = 64, 128
        hidden_states = torch.randn(10, hidden_size)
        submodule_last = AudioModalitySubmodules(input_projections=[torch.nn.Linear(hidden_size, projection_size)],
                                                 is_first_stage=False, is_last_stage=True)
        assert submodule_last.forward(hidden_states=hidden_states).shape == (10, projection_size)
        submodule_mid = AudioModalitySubmodules(input_projections=[torch.nn.Linear(hidden_size, projection_size)],
                                                is_first_stage=False, is_last_stage=False)
        assert submodule_mid.forward(hidden_states=hidden_states).shape == (10, hidden_size)
