"""A user's model and dataset, written outside mimo_runtime. The tests copy this file into a
temporary directory as `acme_mimo.py` and put that directory on PYTHONPATH, so the ranks import
it the way they would import a user's package.

Model: a patch-MLP image encoder (plain torch, not a megatron module) with a linear projection,
feeding a megatron GPT. Data: 8x8 images with one bright 4x4 quadrant; the caption names each
image's quadrant. Samples are lazy mappings that log every field they load, one line per load in
`{log_dir}/rank{R}.log` ("PID FIELD"), so a test can tell which rank loaded what.
"""

import collections.abc
import os

import numpy as np
import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model import MimoModelConfig, StagedModalitySubmodules, layer_spec
from mimo_runtime.model.language import LanguageModel
from mimo_runtime.model.specs import transformer_config

BOS, EOS, PAD, IMAGE = 1, 2, 0, 3
QUADRANT_TOKEN = 5  # caption token of quadrant q is 5 + q
VOCAB, SEQ = 16, 16
PATCH, TOKENS_PER_IMAGE = 4, 4


class PatchMLP(torch.nn.Module):
    """Each 4x4 patch of an (items, 8, 8) batch -> one row: (items * 4, hidden)."""

    def __init__(self, hidden: int, pre_process: bool = True, post_process: bool = True, **_):
        super().__init__()
        self.fc1 = torch.nn.Linear(PATCH * PATCH, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.size(0)
        patches = pixels.reshape(n, 2, PATCH, 2, PATCH).permute(0, 1, 3, 2, 4).reshape(n * TOKENS_PER_IMAGE, PATCH * PATCH)
        return self.fc2(torch.nn.functional.gelu(self.fc1(patches)))


def build_model(args, ctx):
    hidden, enc_hidden = args["hidden"], args["encoder_hidden"]
    lang, stage = ctx.parallel("language"), ctx.stage("language")
    language = ModuleSpec(LanguageModel, params=dict(
        config=transformer_config(hidden, args["heads"], args["layers"], 2 * hidden, lang.tp, lang.pp),
        transformer_layer_spec=layer_spec(causal=True), vocab_size=VOCAB, max_sequence_length=SEQ,
        pre_process=stage.is_first_stage, post_process=stage.is_last_stage,
        share_embeddings_and_output_weights=True, position_embedding_type="rope",
        pg_collection=ctx.pgs["language"]))
    images = ModuleSpec(StagedModalitySubmodules, params=dict(modality="images", pg_collection=ctx.pgs["images"]),
                        submodules={"encoders": {"patch_mlp": ModuleSpec(PatchMLP, params=dict(hidden=enc_hidden))},
                                    "input_projections": [ModuleSpec(torch.nn.Linear, params=dict(
                                        in_features=enc_hidden, out_features=hidden))]})
    return MimoModelConfig(language_model_spec=language, modality_submodules_spec={"images": images},
                           special_token_ids={"images": IMAGE}, tokens_per_item={"images": TOKENS_PER_IMAGE})


class QuadrantSample(collections.abc.Mapping):
    """Sample i, built field by field when a field is read."""

    FIELDS = ("input_ids", "labels", "loss_mask", "modality_inputs")

    def __init__(self, data: "Quadrants", i: int):
        self.data, self.i = data, i

    def __iter__(self):
        return iter(self.FIELDS)

    def __len__(self) -> int:
        return len(self.FIELDS)

    def __getitem__(self, key):
        if key not in self.FIELDS:
            raise KeyError(key)
        if key == "modality_inputs":
            return _Modalities(self.data, self.i)
        self.data.log(key)
        return self.data.token_fields(self.i)[key]


class _Modalities(collections.abc.Mapping):
    def __init__(self, data, i):
        self.data, self.i = data, i

    def __iter__(self):
        return iter(("images",))

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key):
        if key != "images":
            raise KeyError(key)
        self.data.log("images")
        return {"patch_mlp": {"pixels": self.data.images(self.i)}}


class Quadrants:
    def __init__(self, size: int, seed: int, log_dir: str, rank: int):
        self.size, self.seed, self.log_dir, self.rank = size, seed, log_dir, rank

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> QuadrantSample:
        if not 0 <= i < self.size:
            raise IndexError(i)
        return QuadrantSample(self, i)

    def log(self, field: str) -> None:
        if self.log_dir:
            with open(os.path.join(self.log_dir, f"rank{self.rank}.log"), "a") as f:
                f.write(f"{os.getpid()} {field}\n")

    def _quadrants(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        return [int(q) for q in rng.integers(0, 4, size=int(rng.integers(0, 3)))]

    def images(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, i, 1])
        quadrants = self._quadrants(i)
        pixels = rng.uniform(0.0, 0.3, size=(len(quadrants), 8, 8)).astype(np.float32)
        for k, q in enumerate(quadrants):
            r, c = divmod(q, 2)
            pixels[k, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.7
        return torch.from_numpy(pixels)

    def token_fields(self, i: int):
        quadrants = self._quadrants(i)
        ids = [BOS] + [IMAGE] * (TOKENS_PER_IMAGE * len(quadrants))
        start = len(ids)
        ids += [QUADRANT_TOKEN + q for q in quadrants] + [EOS]
        end = len(ids)
        ids += [PAD] * (SEQ - end)
        input_ids = torch.tensor(ids)
        loss_mask = torch.zeros(SEQ)
        loss_mask[start - 1:end - 1] = 1.0
        return {"input_ids": input_ids, "labels": torch.cat([input_ids[1:], torch.tensor([PAD])]),
                "loss_mask": loss_mask}


def build_data(args, ctx):
    size = args.get("size", 256) if ctx.split == "train" else 64
    data = Quadrants(size, ctx.seed + (0 if ctx.split == "train" else 10_000), args.get("log_dir", ""), ctx.rank)
    data.log("open")  # from the rank's own process: tells the rank's pid from its workers'
    return data


def not_a_config(args, ctx):
    return {"language": "gpt"}


def not_a_dataset(args, ctx):
    return 42


NOT_CALLABLE = 3
