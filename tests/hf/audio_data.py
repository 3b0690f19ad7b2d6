"""A dataset for an audio LM of tiny.py's Whisper + Llama parts, as a data factory
(`tests.hf.audio_data:build_data`): 0-2 random clips of (8 mels, 16 frames) per sample, each as 8
`<audio>` tokens after a BOS, then random text; the loss covers the text. Plain dicts of tensors,
deterministic in (seed, index): the input contract `input_features` (clips, mels, frames)."""

import numpy as np
import torch

BOS, PAD = 1, 0


class TinyAudioText:
    def __init__(self, size: int, seed: int, seq: int, mels: int, frames: int, audio_token: int):
        self.size, self.seed, self.seq = size, seed, seq
        self.mels, self.frames, self.audio_token = mels, frames, audio_token

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        if not 0 <= i < self.size:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        n, rows = int(rng.integers(0, 3)), self.frames // 2
        text = rng.integers(5, self.audio_token - 1, size=int(rng.integers(4, self.seq - n * rows)))
        ids = [BOS] + [self.audio_token] * (n * rows) + [int(t) for t in text]
        ids = torch.tensor(ids[:self.seq] + [PAD] * (self.seq - len(ids)))
        loss_mask = torch.zeros(self.seq)
        loss_mask[n * rows:n * rows + len(text)] = 1.0
        features = torch.from_numpy(rng.standard_normal((n, self.mels, self.frames)).astype(np.float32))
        return {"input_ids": ids, "labels": torch.cat([ids[1:], torch.tensor([PAD])]), "loss_mask": loss_mask,
                "modality_inputs": {"audio": {"audio_tower": {"input_features": features}}}}


def build_data(args, ctx):
    return TinyAudioText(64 if ctx.split == "train" else 16, ctx.seed, args["seq"], args.get("mels", 8),
                         args.get("frames", 16), args.get("audio_token", 99))
