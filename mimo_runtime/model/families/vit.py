"""CLIP and SigLIP vision towers as staged megatron encoders, and LLaVA's projector.

The first stage embeds: a conv patch embedding (HF's weight layout, so loading is a copy), CLIP's
class embedding, learned positions, CLIP's `pre_layrnorm`. Every stage runs its share of the
megatron layers. The last stage has no final norm: LLaVA reads the hidden states of layer
`vision_feature_layer`, before any `post_layernorm`, so only that many layers are built. With
LLaVA's `default` feature selection the class-token row is dropped from each image's output.
"""

from typing import Optional

import torch
from megatron.core.models.vision.multimodal_projector import MultimodalProjector
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.mlp import MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlock

from mimo_runtime.model.encoders import StagedEncoder, _check_input
from mimo_runtime.model.families.dims import ProjectorDims, ViTDims
from mimo_runtime.model.families.layers import family_config, family_layer_spec
from mimo_runtime.model.submodules import VisionModalitySubmodules

# modality_inputs key of an HF vision tower and its input tensor
VIT_KEY, VIT_INPUT = "vision_tower", "pixel_values"


class ViTEncoder(StagedEncoder):
    """ViT over `pixel_values` (items, channels, image, image) -> rows (items * tokens_per_item, hidden)."""

    def __init__(self, config, layer_spec: ModuleSpec, pg_collection, dims: ViTDims, modality: str = "images",
                 pre_process: bool = True, post_process: bool = True):
        super().__init__(config, layer_spec, pg_collection, modality, dims.seq_tokens, pre_process, post_process)
        # LLaVA takes hidden states before any final norm
        self.block = TransformerBlock(config, layer_spec, post_layer_norm=False, pre_process=True,
                                      post_process=post_process, pg_collection=pg_collection)
        self.dims = dims
        h = config.hidden_size
        if pre_process:
            self.patch_embedding = torch.nn.Conv2d(dims.channels, h, kernel_size=dims.patch, stride=dims.patch,
                                                   bias=dims.family == "siglip")
            self.position_embedding = torch.nn.Parameter(torch.empty(dims.seq_tokens, h))
            if dims.class_token:
                self.class_embedding = torch.nn.Parameter(torch.empty(h))
            if dims.pre_norm:
                self.pre_layrnorm = torch.nn.LayerNorm(h, eps=dims.norm_eps)

    def embed(self, pixel_values: Optional[torch.Tensor] = None, **extra) -> torch.Tensor:
        d = self.dims
        _check_input(self.modality, VIT_INPUT, pixel_values, extra, (d.channels, d.image_size, d.image_size))
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # (items, patches, hidden), row-major patch order
        if d.class_token:
            x = torch.cat([self.class_embedding.expand(x.size(0), 1, -1), x], dim=1)
        x = x + self.position_embedding
        if d.pre_norm:
            x = self.pre_layrnorm(x)
        return x.transpose(0, 1)

    def forward(self, hidden_states: Optional[torch.Tensor] = None, **inputs) -> torch.Tensor:
        rows = super().forward(hidden_states, **inputs)
        if not self.post_process or not self.dims.drop_class:
            return rows
        per_item = rows.view(-1, self.dims.seq_tokens, rows.size(-1))
        return per_item[:, 1:].reshape(-1, rows.size(-1))


def vit_config(dims: ViTDims, tp: int = 1, pp: int = 1, recompute: str = "none"):
    return family_config(hidden=dims.hidden, layers=dims.layers, heads=dims.heads, ffn_hidden=dims.ffn_hidden,
                         kv_heads=dims.heads, head_dim=dims.hidden // dims.heads, norm="LayerNorm",
                         eps=dims.norm_eps, act=dims.act, gated=False, bias=True, qkv_bias=True, tp=tp, pp=pp,
                         recompute=recompute)


def projector_spec(dims: ProjectorDims, tp: int, pgs) -> ModuleSpec:
    """`mlp2x_gelu`: megatron's MLP projector (fc1 -> act -> fc2); `linear`: its affine projector."""
    # the projector has no attention: heads only need to satisfy the config's TP checks
    config = family_config(hidden=dims.hidden, layers=1, heads=tp, ffn_hidden=dims.hidden, kv_heads=tp,
                           head_dim=dims.hidden, norm="LayerNorm", eps=1e-5, act=dims.act, gated=False,
                           bias=dims.bias, qkv_bias=False, tp=tp)
    kind = {"mlp2x_gelu": "mlp", "linear": "affine"}[dims.kind]
    return ModuleSpec(MultimodalProjector, params=dict(
        config=config, submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear),
        projector_type=kind, input_size=dims.input_size, tp_group=pgs.tp if pgs is not None else None))


def vision_spec(name: str, vit: ViTDims, projector: ProjectorDims, tp: int, pp: int, pgs,
                backend: str = "auto", recompute: str = "none") -> ModuleSpec:
    """A modality submodule: the ViT (split over `pp` stages) + the projector."""
    return encoder_modality_spec(VisionModalitySubmodules, VIT_KEY, ViTEncoder, vit_config(vit, tp, pp, recompute),
                                 name, vit, projector, tp, pgs, backend)


def encoder_modality_spec(submodules, key: str, encoder, config, name: str, dims, projector: ProjectorDims,
                          tp: int, pgs, backend: str) -> ModuleSpec:
    """`submodules` (a StagedModalitySubmodules) of one staged family encoder under `key` + the projector."""
    spec = ModuleSpec(encoder, params=dict(config=config, layer_spec=family_layer_spec(False, False, backend),
                                           pg_collection=pgs, dims=dims, modality=name))
    return ModuleSpec(submodules, params=dict(modality=name, pg_collection=pgs),
                      submodules={"encoders": {key: spec}, "input_projections": [projector_spec(projector, tp, pgs)]})
