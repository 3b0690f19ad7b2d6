"""Preset name -> MimoModel: the modules behind `mimo_runtime.topology.presets.PRESETS`.

`build_model(plan, groups, rank, seed)` builds the modules (and pipeline stages, and TP shards)
that `rank` holds under `plan`, initialized from (seed, global name) only.
"""

import dataclasses
from typing import Dict, Iterable, Mapping, Optional, Tuple

import torch.nn.functional as F
from megatron.core.models.vision.multimodal_projector import MultimodalProjector
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.mlp import MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model.config import MimoModelConfig
from mimo_runtime.model.encoders import ConvStemEncoder, PatchEncoder
from mimo_runtime.model.init import init_parameters
from mimo_runtime.model.inputs import (AUDIO_SHAPE, AUDIO_STRIDE, ENCODER_INPUTS, IMAGE_SHAPE, PATCH,
                                       SPECIAL_TOKEN_IDS, tokens_per_item)
from mimo_runtime.model.language import LanguageModel
from mimo_runtime.model.mimo import MimoModel
from mimo_runtime.model.sequence_parallel import sequence_parallel_block_spec
from mimo_runtime.model.specs import layer_spec, transformer_config, uses_te
from mimo_runtime.model.submodules import AudioModalitySubmodules, VisionModalitySubmodules
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY, RankRole
from mimo_runtime.topology.presets import PRESETS, EncoderDims, LanguageDims

LANG = MIMO_LANGUAGE_MODULE_KEY


def language_model_spec(dims: LanguageDims, tp: int, pp: int, pgs, is_first_stage: bool,
                        is_last_stage: bool, backend: str = "auto", recompute: str = "none", cp: int = 1,
                        sequence_parallel: bool = False, vpp: int = 1) -> ModuleSpec:
    """GPT with rotary positions (in `vpp` interleaved chunks per pipeline stage, model/mimo.py); the Llama-family fields of `dims` (RMSNorm, SwiGLU, GQA, biases,
    untied output) become megatron's own TransformerConfig fields.

    RoPE gives every token its position, encoder rows included (learned absolute positions would
    reach text tokens only, through get_text_embeddings); with packed THD it restarts at each
    sequence, so packed and padded batches see identical inputs.
    """
    config = family_config(transformer_config(dims.hidden, dims.heads, dims.layers, dims.ffn_hidden, tp, pp,
                                              recompute, cp, sequence_parallel), dims)
    if vpp > 1:
        config = dataclasses.replace(config, virtual_pipeline_model_parallel_size=vpp)
    spec = layer_spec(causal=True, backend=backend)
    if sequence_parallel and not uses_te(backend):
        spec = sequence_parallel_block_spec(spec, dims.layers // (pp * vpp))  # model/sequence_parallel.py
    # with SP the merged embeddings are scattered by MimoModel, not by the embedding layer
    return ModuleSpec(module=LanguageModel, params=dict(
        config=config, transformer_layer_spec=spec,
        vocab_size=dims.vocab_size, max_sequence_length=dims.seq_length, pre_process=is_first_stage,
        post_process=is_last_stage, share_embeddings_and_output_weights=dims.tied,
        position_embedding_type="rope", rotary_base=dims.rotary_base, pg_collection=pgs,
        scatter_embedding_sequence_parallel=False))


def family_config(config, dims: LanguageDims):
    """`config` with the language family's norm, MLP, attention groups and biases (the defaults
    of LanguageDims leave it unchanged: LayerNorm + GELU GPT with biases)."""
    fields = {}
    if dims.norm == "rmsnorm":
        fields["normalization"] = "RMSNorm"
    if dims.gated:
        fields.update(gated_linear_unit=True, activation_func=F.silu)
    if dims.query_groups is not None:
        fields["num_query_groups"] = dims.query_groups
    if not dims.linear_bias:
        fields.update(add_bias_linear=False, add_qkv_bias=dims.qkv_bias)
    return dataclasses.replace(config, **fields) if fields else config


def modality_spec(name: str, enc: EncoderDims, language_hidden: int, tp: int, pp: int, pgs,
                  backend: str = "auto", recompute: str = "none", vpp: int = 1) -> ModuleSpec:
    """Encoder (split over `pp` stages, in `vpp` interleaved chunks each, model/mimo.py) + MLP projector
    into the language model's hidden size."""
    if tokens_per_item(enc.modality) != enc.tokens_per_item:
        raise ValueError(f"preset encoder '{name}': tokens_per_item={enc.tokens_per_item}, but its "
                         f"{enc.modality} inputs give {tokens_per_item(enc.modality)} tokens per item")
    config = transformer_config(enc.hidden, enc.heads, enc.layers, 4 * enc.hidden, tp, pp, recompute)
    if vpp > 1 and pp > 1:
        config = dataclasses.replace(config, virtual_pipeline_model_parallel_size=vpp)
    common = dict(config=config, layer_spec=layer_spec(causal=False, backend=backend), pg_collection=pgs,
                  modality=name)
    if enc.modality == "images":
        cls, encoder = VisionModalitySubmodules, ModuleSpec(PatchEncoder, params=dict(
            common, image_shape=IMAGE_SHAPE, patch=PATCH))
    else:
        cls, encoder = AudioModalitySubmodules, ModuleSpec(ConvStemEncoder, params=dict(
            common, feature_shape=AUDIO_SHAPE, stride=AUDIO_STRIDE))
    proj_config = transformer_config(language_hidden, enc.heads, 1, language_hidden, tp, 1)
    projector = ModuleSpec(MultimodalProjector, params=dict(
        config=proj_config, submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear),
        projector_type="mlp", input_size=enc.hidden, tp_group=pgs.tp if pgs is not None else None))
    key = ENCODER_INPUTS[enc.modality][0]
    return ModuleSpec(cls, params=dict(modality=name, pg_collection=pgs),
                      submodules={"encoders": {key: encoder}, "input_projections": [projector]})


def build_mimo_model(preset: str, seed: int, parallel: Mapping[str, Tuple[int, int]], pgs: Mapping[str, object],
                     grid_map: Optional[Mapping[str, object]] = None, rank: Optional[int] = None,
                     frozen: Iterable[str] = (), backend: str = "auto",
                     recompute: Optional[Mapping[str, str]] = None, cp: int = 1,
                     sequence_parallel: bool = False, vpp: int = 1,
                     encoder_vpp: Optional[Mapping[str, int]] = None) -> MimoModel:
    """The MimoModel `rank` holds.

    parallel: {module: (tp, pp)}; pgs: {module: ProcessGroupCollection or None where not held};
    grid_map: {module: grid} for the role (None: everything colocated on this rank);
    recompute: {module: none|full|selective} (model/recompute.py), default none;
    cp, sequence_parallel, vpp: the language model's context and sequence parallelism, and its
    virtual pipeline chunks per stage; encoder_vpp: {encoder: virtual pipeline chunks per stage}.
    """
    config = preset_config(preset, parallel, pgs, grid_map, rank, backend, recompute, cp, sequence_parallel, vpp,
                           encoder_vpp)
    model = MimoModel(config, rank=rank)
    _check_layer_split(model)
    init_parameters(model, seed)
    for name in frozen:
        freeze_encoder(model, name)
    return model


def preset_config(preset: str, parallel: Mapping[str, Tuple[int, int]], pgs: Mapping[str, object],
                  grid_map: Optional[Mapping[str, object]] = None, rank: Optional[int] = None,
                  backend: str = "auto", recompute: Optional[Mapping[str, str]] = None, cp: int = 1,
                  sequence_parallel: bool = False, vpp: int = 1,
                  encoder_vpp: Optional[Mapping[str, int]] = None) -> MimoModelConfig:
    """The MimoModelConfig of a preset (arguments as in `build_mimo_model`); the preset factory
    (model/factory.py) returns it like any user factory."""
    recompute = recompute or {}
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset '{preset}'; known: {sorted(PRESETS)}")
    dims = PRESETS[preset]
    modalities = list(dims.encoders)
    role = RankRole.build(modalities, grid_map, rank)
    stage = role.modules.get(LANG)
    tp, pp = parallel.get(LANG, (1, 1))
    lm_spec = language_model_spec(dims.language, tp, pp, pgs.get(LANG), stage is None or stage.is_first_stage,
                                  stage is None or stage.is_last_stage, backend, recompute.get(LANG, "none"),
                                  cp, sequence_parallel, vpp if pp > 1 else 1)
    specs = {}
    for name, enc in dims.encoders.items():
        e_tp, e_pp = parallel.get(name, (1, 1))
        specs[name] = modality_spec(name, enc, dims.language.hidden, e_tp, e_pp, pgs.get(name), backend,
                                    recompute.get(name, "none"), (encoder_vpp or {}).get(name, 1))
    return MimoModelConfig(language_model_spec=lm_spec, modality_submodules_spec=specs,
                           special_token_ids={m: SPECIAL_TOKEN_IDS[m] for m in modalities},
                           module_to_grid_map=grid_map,
                           tokens_per_item={m: e.tokens_per_item for m, e in dims.encoders.items()})


def build_model(plan, groups: Mapping[str, object], rank: int, seed: int, backend: str = "auto",
                device=None) -> MimoModel:
    """The MimoModel of `rank` under `plan`, with the groups of `mimo_runtime.groups.build_module_groups(plan, ...)`:
    its topology's preset or model factory, both through `mimo_runtime.model.factory` (on `device`)."""
    from mimo_runtime.model.factory import build_model as build_from_factory

    return build_from_factory(plan, groups, rank, seed, backend, device=device)


def freeze_encoder(model: MimoModel, name: str) -> None:
    """Freeze a modality's encoder weights; its projection stays trainable (LLaVA stage 1)."""
    sub = model.modality_submodules[name] if name in model.modality_submodules else None
    if sub is None:
        return
    for param in sub.encoders.parameters():
        param.requires_grad_(False)


def _check_layer_split(model: MimoModel) -> None:
    # keyed init and checkpoints assume megatron's even split: stage p holds layers p*L/pp ...
    blocks: Dict[str, object] = {n: [next(iter(c.encoders.values())).block for c in model.encoder_chunks(n)]
                                 for n, s in model.modality_submodules.items()
                                 if hasattr(next(iter(s.encoders.values()), None), "block")}  # a user encoder may have none
    if model.language_model is not None:
        blocks[LANG] = [lm.decoder for lm in model.language_modules()]
    for name, chunks in blocks.items():
        config = chunks[0].config
        stages = config.pipeline_model_parallel_size * len(chunks)  # virtual stages: interleaved chunks
        want = config.num_layers // stages
        if config.num_layers % stages or any(len(block.layers) != want for block in chunks):
            vpp = f" x vpp={len(chunks)}" if len(chunks) > 1 else ""
            raise ValueError(f"{name}: pp={config.pipeline_model_parallel_size}{vpp} must divide num_layers="
                             f"{config.num_layers} (this stage built {[len(b.layers) for b in chunks]} layers)")
