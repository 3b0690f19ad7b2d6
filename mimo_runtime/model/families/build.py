"""A family model's MimoModelConfig: a decoder, and for a VLM one image encoder + projector, for an
audio LM one Whisper encoder + projector (or both)."""

from typing import Mapping, Optional, Tuple

from mimo_runtime.model.config import MimoModelConfig
from mimo_runtime.model.families.decoder import decoder_spec
from mimo_runtime.model.families.dims import VLMDims
from mimo_runtime.model.families.vit import vision_spec
from mimo_runtime.model.families.whisper import audio_spec
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY as LANG, RankRole


def family_config(dims: VLMDims, parallel: Mapping[str, Tuple[int, int]], pgs: Mapping[str, object],
                  grid_map: Optional[Mapping[str, object]] = None, rank: Optional[int] = None,
                  backend: str = "auto", recompute: Optional[Mapping[str, str]] = None, cp: int = 1,
                  sequence_parallel: bool = False, image_module: str = "images",
                  audio_module: str = "audio") -> MimoModelConfig:
    """parallel: {module: (tp, pp)}; pgs: {module: ProcessGroupCollection or None where not held};
    grid_map/rank as for presets (None: everything colocated on this rank)."""
    recompute = recompute or {}
    encoders = {image_module: (dims.vision, dims.projector, dims.image_token_id, vision_spec),
                audio_module: (dims.audio, dims.audio_projector, dims.audio_token_id, audio_spec)}
    encoders = {name: e for name, e in encoders.items() if e[0] is not None}
    role = RankRole.build(list(encoders), grid_map, rank)
    stage = role.modules.get(LANG)
    tp, pp = parallel.get(LANG, (1, 1))
    lm = decoder_spec(dims.language, tp, pp, pgs.get(LANG), stage is None or stage.is_first_stage,
                      stage is None or stage.is_last_stage, backend, recompute.get(LANG, "none"), cp,
                      sequence_parallel)
    specs, ids, tokens = {}, {}, {}
    for name, (encoder, projector, token, spec) in encoders.items():
        e_tp, e_pp = parallel.get(name, (1, 1))
        specs[name] = spec(name, encoder, projector, e_tp, e_pp, pgs.get(name), backend, recompute.get(name, "none"))
        ids[name], tokens[name] = token, encoder.tokens_per_item
    return MimoModelConfig(language_model_spec=lm, modality_submodules_spec=specs, special_token_ids=ids,
                           module_to_grid_map=grid_map, tokens_per_item=tokens)
