"""LLaVA-format datasets with audio, written by the tests: WAV clips, PNG images, JSONL records, an HF
tokenizer whose `<audio>` has tiny-avlm's audio placeholder id (4), and a WhisperFeatureExtractor sized
to tiny-avlm's audio encoder (16 mel bins, 32 frames)."""

import json
import os
import wave
from typing import Dict, List

import numpy as np

from mimo_runtime.data.demo_data import save_word_tokenizer

from tests.data.llava_files import WORDS, write_image

SPECIAL = ["<pad>", "<s>", "</s>", "<image>", "<audio>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>",
           "<|end|>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")
RATE = 16000
EXTRACTOR = dict(feature_size=16, sampling_rate=RATE, hop_length=500, chunk_length=1, n_fft=400)


def write_tokenizer(directory: str) -> str:
    save_word_tokenizer(directory, SPECIAL + WORDS, SPECIAL, TEMPLATE)
    return directory


def write_extractor(directory: str, **overrides) -> str:
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(**{**EXTRACTOR, **overrides}).save_pretrained(directory)
    return directory


def clip(seed: int, seconds: float = 0.6, rate: int = RATE) -> np.ndarray:
    """A tone of a seeded pitch in noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return 0.6 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + rng.normal(0, 0.05, t.size)


def write_wav(path: str, samples: np.ndarray, rate: int = RATE, width: int = 2, channels: int = 1) -> None:
    scale = 2 ** (8 * width - 1) - 1
    ints = np.round(np.clip(samples, -1, 1) * scale).astype(np.int64)
    ints = np.repeat(ints[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        raw = ints.astype(f"<i{width}").tobytes()
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def record(i: int, images: int, clips: int) -> Dict:
    """Sample i: `images` images and `clips` audio clips before a question, an answer of digit words."""
    question = "<image> " * images + "<audio> " * clips + ("what digits ?" if images + clips else "say hello")
    out = {"id": f"s{i}", "conversations": [{"from": "human", "value": question.strip()},
                                            {"from": "gpt", "value": " ".join(WORDS[(i + k) % 10]
                                                                              for k in range(1 + i % 2))}]}
    names = [f"img{i}_{k}.png" for k in range(images)]
    if names:
        out["image"] = names[0] if len(names) == 1 else names
    if clips:
        out["audio"] = f"clip{i}.wav"
    return out


def write_av_dataset(directory: str, n: int = 16, records: List[Dict] = None) -> Dict[str, str]:
    """media/ (images and clips), train.jsonl, tokenizer/ and extractor/ under `directory`; by default
    samples with 0, 1 and 2 images, with and without a clip, and text-only ones."""
    media = os.path.join(directory, "media")
    os.makedirs(media, exist_ok=True)
    recs = records if records is not None else [record(i, i % 3, (i // 3) % 2) for i in range(n)]
    for r in recs:
        for name in [r["image"]] if isinstance(r.get("image"), str) else r.get("image", []):
            write_image(os.path.join(media, name), seed=sum(map(ord, name)))
        for name in [r["audio"]] if isinstance(r.get("audio"), str) else r.get("audio", []):
            write_wav(os.path.join(media, name), clip(sum(map(ord, name))))
    path = os.path.join(directory, "train.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    tok, ext = os.path.join(directory, "tokenizer"), os.path.join(directory, "extractor")
    if not os.path.isdir(tok):
        write_tokenizer(tok)
    if not os.path.isdir(ext):
        write_extractor(ext)
    return {"path": path, "image_root": media, "tokenizer": tok, "feature_extractor": ext}
