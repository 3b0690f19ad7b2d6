"""Audio files -> the log-mel `input_features` an audio encoder takes, through transformers'
WhisperFeatureExtractor.

The extractor comes from a `preprocessor_config.json` (`data.feature_extractor`, default the tokenizer
directory: an HF audio model directory carries both), so features are computed as the encoder was
trained (mel bins, hop, the clip length it pads or cuts every clip to). WAV files are read with the
standard library's `wave` module (PCM, 8/16/24/32-bit, channels averaged to mono); a file at another
sample rate than the extractor's is a data error, not resampled behind the user's back.
"""

import json
import os
import wave
from typing import Tuple

import numpy as np

from mimo_runtime.data.records import DataError

FEATURE_FILE = "preprocessor_config.json"
WHISPER = "WhisperFeatureExtractor"


def load_feature_extractor(directory: str):
    """The directory's WhisperFeatureExtractor; DataError when there is none."""
    path = os.path.join(directory, FEATURE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            kind = json.load(f).get("feature_extractor_type")
    except OSError:
        raise DataError(directory, 0, f"no {FEATURE_FILE}: audio needs a {WHISPER}'s config there "
                                      f"(data.feature_extractor)") from None
    except (ValueError, AttributeError):
        raise DataError(path, 0, "not a JSON object") from None
    if kind != WHISPER:
        raise DataError(path, 0, f"feature_extractor_type is {kind!r}; audio samples need a {WHISPER}")
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(directory, local_files_only=True)


def read_wav(path: str) -> Tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate); raises on a bad file."""
    with wave.open(path, "rb") as w:
        channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(frames)
    if len(raw) != frames * channels * width:
        raise ValueError(f"truncated: {len(raw)} bytes of {frames * channels * width}")
    if width == 1:
        a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        a = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 2.0 ** 23
    elif width in (2, 4):
        a = np.frombuffer(raw, f"<i{width}").astype(np.float32) / 2.0 ** (8 * width - 1)
    else:
        raise ValueError(f"{8 * width}-bit samples are not PCM WAV")
    return a.reshape(-1, channels).mean(axis=1), rate


def check_audio(path: str, rate: int) -> None:
    """Raises ValueError(message) unless `path` is a readable WAV file sampled at `rate` Hz."""
    try:
        samples, got = read_wav(path)
    except Exception as e:  # wave raises OSError, EOFError, wave.Error, even RuntimeError on a corrupt chunk
        raise ValueError(f"unreadable audio {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    if got != rate:
        raise ValueError(f"audio {path} is sampled at {got} Hz; the feature extractor takes {rate} Hz")
    if samples.size == 0:
        raise ValueError(f"audio {path} has no samples")


def features_of(samples: np.ndarray, extractor) -> np.ndarray:
    """(mel bins, frames) float32 log-mel features of one clip, padded or cut to the extractor's length."""
    out = extractor(samples, sampling_rate=extractor.sampling_rate, return_tensors="np")["input_features"][0]
    return np.asarray(out, dtype=np.float32)


def load_features(path: str, extractor) -> np.ndarray:
    samples, rate = read_wav(path)
    if rate != extractor.sampling_rate:
        raise ValueError(f"sampled at {rate} Hz; the feature extractor takes {extractor.sampling_rate} Hz")
    return features_of(samples, extractor)
