"""A dataset for the tiny HF models of tiny.py, as a data factory (`tests.hf.hf_data:build_data`):
0-2 random items per sample, each as `tokens` placeholder tokens after a BOS, then random text; the
loss covers the text. Items are 16x16 RGB images (`pixel_values` of the LLaVA models), or with
`audio: true` Whisper clips of (8 mels, 16 frames) (`input_features`, 8 rows each) under module
`audio`. Plain dicts of tensors, deterministic in (seed, index)."""

import numpy as np
import torch

BOS, PAD = 1, 0
IMAGES = ("images", "vision_tower", "pixel_values", (3, 16, 16))
AUDIO = ("audio", "audio_tower", "input_features", (8, 16))


class TinyImageText:
    def __init__(self, size: int, seed: int, seq: int, tokens: int, image_token: int, vocab: int, images: bool,
                 items=IMAGES):
        self.size, self.seed, self.seq, self.tokens = size, seed, seq, tokens
        self.image_token, self.vocab, self.images, self.items = image_token, vocab, images, items

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        if not 0 <= i < self.size:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        n = int(rng.integers(0, 3)) if self.images else 0
        text = rng.integers(5, self.image_token - 1, size=int(rng.integers(4, self.seq - n * self.tokens)))
        ids = [BOS] + [self.image_token] * (n * self.tokens) + [int(t) for t in text]
        ids = torch.tensor(ids[:self.seq] + [PAD] * (self.seq - len(ids)))
        loss_mask = torch.zeros(self.seq)
        loss_mask[n * self.tokens:n * self.tokens + len(text)] = 1.0
        sample = {"input_ids": ids, "labels": torch.cat([ids[1:], torch.tensor([PAD])]), "loss_mask": loss_mask}
        if self.images:
            module, key, name, shape = self.items
            x = torch.from_numpy(rng.standard_normal((n, *shape)).astype(np.float32))
            sample["modality_inputs"] = {module: {key: {name: x}}}
        return sample


def build_data(args, ctx):
    size = 64 if ctx.split == "train" else 16
    audio = bool(args.get("audio", False))
    return TinyImageText(size, ctx.seed, args["seq"], args.get("tokens", 8 if audio else 16),
                         args.get("image_token", 99), args.get("vocab", 100), bool(args.get("images", True)),
                         AUDIO if audio else IMAGES)
