"""The example's dataset: 1-2 handwritten digits (scikit-learn's 8x8 digits) captioned with their values.

`build_data(args, ctx)` is the data factory the topology names. It returns samples in
MimoModel.forward's format; the runtime hands each rank only the fields it uses.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits

from conv_vlm import IMAGE_TOKEN, ROWS_PER_IMAGE

PAD, BOS, EOS, DIGIT_0 = 0, 1, 2, 10  # digit d is token 10 + d


class DigitCaptions:
    def __init__(self, split: str, seed: int, size: int, seq_length: int):
        digits = load_digits()
        pick = np.arange(len(digits.target)) % 5 != 0 if split == "train" else np.arange(len(digits.target)) % 5 == 0
        self.images = torch.from_numpy((digits.images[pick] / 16.0).astype(np.float32)).unsqueeze(1)
        self.labels = digits.target[pick]
        self.seed, self.size, self.seq_length = seed, size, seq_length

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        chosen = rng.integers(0, len(self.labels), size=int(rng.integers(1, 3)))
        ids = [BOS] + [IMAGE_TOKEN] * (ROWS_PER_IMAGE * len(chosen))
        start = len(ids)
        ids += [DIGIT_0 + int(self.labels[j]) for j in chosen] + [EOS]
        end = len(ids)
        input_ids = torch.tensor(ids + [PAD] * (self.seq_length - end))
        loss_mask = torch.zeros(self.seq_length)
        loss_mask[start - 1:end - 1] = 1.0  # predict the caption and EOS only
        # A plain dict loads everything; a collections.abc.Mapping that builds fields when read would
        # let language ranks skip the pixels entirely (see docs/python_api.md).
        return {"input_ids": input_ids, "labels": torch.cat([input_ids[1:], torch.tensor([PAD])]),
                "loss_mask": loss_mask, "modality_inputs": {"images": {"conv": {"pixels": self.images[chosen]}}}}


def build_data(args, ctx):
    """ctx.split is "train", or "heldout" for --eval-every."""
    size = args["size"] if ctx.split == "train" else args["size"] // 4
    return DigitCaptions(ctx.split, ctx.seed, size, args["seq_length"])
