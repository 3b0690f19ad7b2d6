"""MimoModel (upstream megatron MIMO's role-aware API) on explicit process groups, CPU-portable.

Exports load lazily: `mimo_runtime.model.inputs` (token ids, input shapes) is shared with
`mimo_runtime.data`, which should not pay for importing megatron.
"""

import importlib

from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY, ModuleLayout, ModuleStageInfo, RankRole

_EXPORTS = {
    "MimoModel": "mimo_runtime.model.mimo",
    "MimoModelConfig": "mimo_runtime.model.config",
    "build_model": "mimo_runtime.model.presets",
    "build_mimo_model": "mimo_runtime.model.presets",
    "freeze_encoder": "mimo_runtime.model.presets",
    "global_parameters": "mimo_runtime.model.init",
    "shard_of": "mimo_runtime.model.init",
    "init_parameters": "mimo_runtime.model.init",
    "masked_token_loss_sum": "mimo_runtime.model.loss",
    "vocab_parallel_cross_entropy": "mimo_runtime.model.loss",
    "SDPAttention": "mimo_runtime.model.attention",
    "ModalitySubmodules": "mimo_runtime.model.submodules",
    "StagedModalitySubmodules": "mimo_runtime.model.submodules",
    "VisionModalitySubmodules": "mimo_runtime.model.submodules",
    "AudioModalitySubmodules": "mimo_runtime.model.submodules",
    "layer_spec": "mimo_runtime.model.specs",
}

__all__ = sorted(_EXPORTS) + ["MIMO_LANGUAGE_MODULE_KEY", "ModuleLayout", "ModuleStageInfo", "RankRole"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mimo_runtime.model' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
