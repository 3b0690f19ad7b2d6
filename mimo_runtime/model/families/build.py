"""A family model's MimoModelConfig: a decoder, and for a VLM one image encoder + projector."""

from typing import Mapping, Optional, Tuple

from mimo_runtime.model.config import MimoModelConfig
from mimo_runtime.model.families.decoder import decoder_spec
from mimo_runtime.model.families.dims import VLMDims
from mimo_runtime.model.families.vit import vision_spec
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY as LANG, RankRole


def family_config(dims: VLMDims, parallel: Mapping[str, Tuple[int, int]], pgs: Mapping[str, object],
                  grid_map: Optional[Mapping[str, object]] = None, rank: Optional[int] = None,
                  backend: str = "auto", recompute: Optional[Mapping[str, str]] = None, cp: int = 1,
                  sequence_parallel: bool = False, image_module: str = "images") -> MimoModelConfig:
    """parallel: {module: (tp, pp)}; pgs: {module: ProcessGroupCollection or None where not held};
    grid_map/rank as for presets (None: everything colocated on this rank)."""
    recompute = recompute or {}
    modalities = [image_module] if dims.vision is not None else []
    role = RankRole.build(modalities, grid_map, rank)
    stage = role.modules.get(LANG)
    tp, pp = parallel.get(LANG, (1, 1))
    lm = decoder_spec(dims.language, tp, pp, pgs.get(LANG), stage is None or stage.is_first_stage,
                      stage is None or stage.is_last_stage, backend, recompute.get(LANG, "none"), cp,
                      sequence_parallel)
    specs, ids, tokens = {}, {}, {}
    if dims.vision is not None:
        e_tp, e_pp = parallel.get(image_module, (1, 1))
        specs[image_module] = vision_spec(image_module, dims.vision, dims.projector, e_tp, e_pp,
                                          pgs.get(image_module), backend, recompute.get(image_module, "none"))
        ids[image_module] = dims.image_token_id
        tokens[image_module] = dims.vision.tokens_per_item
    return MimoModelConfig(language_model_spec=lm, modality_submodules_spec=specs, special_token_ids=ids,
                           module_to_grid_map=grid_map, tokens_per_item=tokens)
