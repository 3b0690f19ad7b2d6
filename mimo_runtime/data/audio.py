"""Deterministic spoken-digit stand-ins: DTMF tone clips -> log-mel-like features.

A digit is the telephone keypad's pair of tones (one low, one high); each clip varies onset,
length, loudness, pitch (+-1.5%) and noise with its own generator, so the encoder must learn the
tone pair, not memorize a waveform.
"""

import numpy as np

from mimo_runtime.model.inputs import AUDIO_SHAPE

SAMPLE_RATE = 8000
WINDOW, HOP = 256, 128
MELS, FRAMES = AUDIO_SHAPE
_LOW = (941, 697, 697, 697, 770, 770, 770, 852, 852, 852)
_HIGH = (1336, 1209, 1336, 1477, 1209, 1336, 1477, 1209, 1336, 1477)
DTMF = {d: (_LOW[d], _HIGH[d]) for d in range(10)}


def tone_clip(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A mono waveform long enough for FRAMES frames: silence, the digit's tone pair, silence."""
    n = HOP * (FRAMES - 1) + WINDOW
    t = np.arange(n) / SAMPLE_RATE
    onset = rng.uniform(0.0, 0.2)
    length = rng.uniform(0.25, 0.45)
    envelope = ((t >= onset) & (t < onset + length)).astype(np.float64)
    low, high = (f * rng.uniform(0.985, 1.015) for f in DTMF[digit])
    phase = rng.uniform(0, 2 * np.pi, size=2)
    wave = np.sin(2 * np.pi * low * t + phase[0]) + np.sin(2 * np.pi * high * t + phase[1])
    return rng.uniform(0.3, 1.0) * envelope * wave + rng.normal(0.0, 0.05, size=n)


def _mel_filters() -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.fft.rfftfreq(WINDOW, 1.0 / SAMPLE_RATE)
    edges = hz(np.linspace(mel(300.0), mel(2000.0), MELS + 2))
    bank = np.zeros((MELS, freqs.size))
    for i in range(MELS):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        bank[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return bank


_FILTERS = _mel_filters()


def log_mel(wave: np.ndarray) -> np.ndarray:
    """(MELS, FRAMES) log filterbank energies, scaled to roughly [-1, 1]."""
    idx = np.arange(FRAMES)[:, None] * HOP + np.arange(WINDOW)[None, :]
    spectrum = np.abs(np.fft.rfft(wave[idx] * np.hanning(WINDOW), axis=-1)) ** 2
    energy = spectrum @ _FILTERS.T  # (FRAMES, MELS)
    return ((np.log10(energy + 1e-3) - 1.0) / 3.0).T.astype(np.float32)


def digit_features(digit: int, seed_sequence) -> np.ndarray:
    """Features of one clip of `digit`, fully determined by `seed_sequence`."""
    return log_mel(tone_clip(digit, np.random.default_rng(seed_sequence)))
