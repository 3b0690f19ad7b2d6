"""MimoModelConfig, as in upstream megatron MIMO (plus the grid map and kv_format of the newer API)."""

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.plan.roles import check_grid_map_keys

KV_FORMATS = ("sbhd", "thd")


@dataclass
class MimoModelConfig:
    """language_model_spec: ModuleSpec of the language model (its params carry `config`).
    modality_submodules_spec: {modality: ModuleSpec of a modality submodule}.
    special_token_ids: {modality: placeholder id in input_ids}.
    module_to_grid_map: {module: grid} (HyperCommGrid or anything with rank_offset, size,
        dim_names, get_pg("pp")); keys must be the modality names + "language" (ValueError
        naming the missing and extra keys, as upstream). None: every module on every rank.
    kv_format: "sbhd" (padded batches) or "thd" (packed sequences, with packing_kwargs).
    tokens_per_item: {modality: rows one item (an image, a clip) adds to the language sequence}
        (our extension): the runtime splits an encoder's output rows by sample with it, so encoder
        ranks never read token ids; the data puts that many special tokens per item.
    """

    language_model_spec: Optional[ModuleSpec] = None
    modality_submodules_spec: Dict[str, ModuleSpec] = field(default_factory=dict)
    special_token_ids: Dict[str, int] = field(default_factory=dict)
    module_to_grid_map: Optional[Mapping[str, Any]] = None
    kv_format: str = "sbhd"
    tokens_per_item: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.kv_format not in KV_FORMATS:
            raise ValueError(f"kv_format must be one of {KV_FORMATS}, got '{self.kv_format}'")
        missing = sorted(set(self.modality_submodules_spec) - set(self.special_token_ids))
        if missing:
            raise ValueError(f"special_token_ids has no id for modality {missing}")
        bad = {m: n for m, n in self.tokens_per_item.items() if not isinstance(n, int) or n <= 0}
        if bad:
            raise ValueError(f"tokens_per_item must be positive integers, got {bad}")
        if self.module_to_grid_map is not None:
            check_grid_map_keys(self.modality_submodules_spec, self.module_to_grid_map)
        ids = list(self.special_token_ids.values())
        if len(set(ids)) != len(ids):
            raise ValueError(f"special_token_ids must be distinct, got {self.special_token_ids}")
