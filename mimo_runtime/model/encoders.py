"""Modality encoders that split across pipeline stages like the language model.

First stage: input embedding (patches or a conv stem) + position embedding. Every stage: its share
of a megatron TransformerBlock (layers divided by the block from the pp group's rank). Last stage:
the final norm, and rows flattened item by item: (num_items * tokens_per_item, hidden).
Between stages the hidden tensor is megatron's (tokens, items, hidden).

Built from a TransformerBlock rather than megatron's CLIPViTModel: that one calls `.cuda()` in
`__init__` and cannot split across pipeline stages.

Interleaved (`virtual_pipeline_model_parallel_size` V in the config): `vp_stage` c makes the block hold
virtual stage c * pp + pp_rank's layers (megatron's rule); pre/post_process then mean the first and the
last virtual stage (model/mimo.py builds one encoder per chunk).
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlock
from megatron.core.transformer.transformer_config import TransformerConfig


class StagedEncoder(MegatronModule):
    """Base: subclasses define `embed(**inputs) -> (tokens, items, hidden)` for the first stage."""

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec, pg_collection: ProcessGroupCollection,
                 modality: str, tokens_per_item: int, pre_process: bool = True, post_process: bool = True,
                 vp_stage: Optional[int] = None):
        super().__init__(config=config)
        self.pg_collection = pg_collection
        self.tp_group = pg_collection.tp
        self.modality, self.tokens_per_item = modality, tokens_per_item
        self.pre_process, self.post_process = pre_process, post_process
        # pre_process=True: the block always takes `hidden_states` as an argument; stage inputs
        # arrive through our forward, not through megatron's set_input_tensor side channel.
        self.block = TransformerBlock(config, layer_spec, pre_process=True, post_process=post_process,
                                      pg_collection=pg_collection, vp_stage=vp_stage)

    def embed(self, **inputs) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden_states: Optional[torch.Tensor] = None, **inputs) -> torch.Tensor:
        if self.pre_process:
            if hidden_states is not None:
                raise ValueError(f"{self.modality}: the first encoder stage takes raw inputs, not hidden states")
            h = self.embed(**inputs)
        else:
            if inputs:
                raise ValueError(f"{self.modality}: a non-first encoder stage takes hidden states, "
                                 f"got raw inputs {sorted(inputs)}")
            _check_hidden(self.modality, hidden_states, self.tokens_per_item, self.config.hidden_size)
            h = hidden_states
        items = h.size(1)
        if items == 0:
            # megatron's attention reshapes with -1 and fails on 0 items: run one zero item and
            # keep none of it. The graph (and each TP collective) stays the same as for a
            # non-empty batch, gradients are exactly zero and the (0-item) input still gets a grad.
            h = torch.cat([h, h.new_zeros(h.size(0), 1, h.size(2))], dim=1)
        h = self.block(hidden_states=h, attention_mask=None)[:, :items]
        if not self.post_process:
            return h
        # (tokens, items, hidden) -> rows item by item, the order of special tokens in input_ids
        return h.transpose(0, 1).reshape(-1, h.size(-1))


class PatchEncoder(StagedEncoder):
    """ViT over small images: non-overlapping patches -> linear -> + learned positions."""

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec, pg_collection: ProcessGroupCollection,
                 image_shape: Sequence[int], patch: int, modality: str = "images", pre_process: bool = True,
                 post_process: bool = True, vp_stage: Optional[int] = None):
        c, height, width = image_shape
        if height % patch or width % patch:
            raise ValueError(f"{modality}: patch {patch} does not divide image {height}x{width}")
        tokens = (height // patch) * (width // patch)
        super().__init__(config, layer_spec, pg_collection, modality, tokens, pre_process, post_process, vp_stage)
        self.image_shape, self.patch = tuple(image_shape), patch
        if pre_process:
            self.patch_embed = torch.nn.Linear(c * patch * patch, config.hidden_size)
            self.pos_embed = torch.nn.Parameter(torch.empty(tokens, config.hidden_size))

    def embed(self, pixels: torch.Tensor = None, **extra) -> torch.Tensor:
        _check_input(self.modality, "pixels", pixels, extra, self.image_shape)
        p = self.patch
        n, c = pixels.size(0), pixels.size(1)
        # (n, c, H, W) -> (n, tokens, c*p*p), row-major patch order; sizes explicit so n=0 works
        patches = pixels.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(
            n, self.tokens_per_item, c * p * p)
        h = self.patch_embed(patches) + self.pos_embed
        return h.transpose(0, 1)


class ConvStemEncoder(StagedEncoder):
    """Audio encoder: two stride-2 1-D convolutions over log-mel frames, like Whisper's stem."""

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec, pg_collection: ProcessGroupCollection,
                 feature_shape: Sequence[int], stride: int = 4, modality: str = "audio", pre_process: bool = True,
                 post_process: bool = True, vp_stage: Optional[int] = None):
        mels, frames = feature_shape
        if stride != 4 or frames % stride:
            raise ValueError(f"{modality}: the conv stem downsamples by 4; got stride {stride}, frames {frames}")
        super().__init__(config, layer_spec, pg_collection, modality, frames // stride, pre_process, post_process,
                         vp_stage)
        self.feature_shape = tuple(feature_shape)
        if pre_process:
            h = config.hidden_size
            self.conv1 = torch.nn.Conv1d(mels, h, kernel_size=3, stride=2, padding=1)
            self.conv2 = torch.nn.Conv1d(h, h, kernel_size=3, stride=2, padding=1)
            self.pos_embed = torch.nn.Parameter(torch.empty(self.tokens_per_item, h))

    def embed(self, features: torch.Tensor = None, **extra) -> torch.Tensor:
        _check_input(self.modality, "features", features, extra, self.feature_shape)
        h = F.gelu(self.conv2(F.gelu(self.conv1(features))))  # (n, hidden, tokens)
        h = h.permute(2, 0, 1) + self.pos_embed[:, None, :]
        return h


def _check_input(modality: str, name: str, x, extra: dict, item_shape) -> None:
    if extra:
        raise ValueError(f"{modality}: unexpected encoder inputs {sorted(extra)}; expected only '{name}'")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{modality}: encoder input '{name}' is missing (expected a tensor of shape "
                         f"(items, {', '.join(map(str, item_shape))}))")
    want = len(item_shape) + 1
    if x.dim() != want or tuple(x.shape[1:]) != tuple(item_shape):
        raise ValueError(f"{modality}: '{name}' must have shape (items, {', '.join(map(str, item_shape))}), "
                         f"got {tuple(x.shape)} ({x.dim()}-D, expected {want}-D)")


def _check_hidden(modality: str, h, tokens: int, hidden: int) -> None:
    if not isinstance(h, torch.Tensor):
        raise ValueError(f"{modality}: a non-first encoder stage needs hidden states from "
                         f"set_input_tensor({{'{modality}': h}}), got none")
    if h.dim() != 3 or h.size(0) != tokens or h.size(2) != hidden:
        raise ValueError(f"{modality}: stage input must have shape ({tokens}, items, {hidden}), "
                         f"got {tuple(h.shape)}")
