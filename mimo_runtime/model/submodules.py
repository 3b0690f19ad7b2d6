"""Modality submodules (encoders + input projection) that know their pipeline stage.

Upstream's `from_spec(spec, is_first_stage, is_last_stage)`: an encoder whose constructor takes
`pre_process`/`post_process` is built with `pre_process=is_first_stage, post_process=is_last_stage`;
any other encoder (megatron's CLIPViTModel, HF modules) is built as its spec says and runs whole on
one stage. The input projection into the language model's hidden size exists only on the last
stage (a non-last stage has nothing to project).
"""

import inspect
from typing import Any, Dict, List, Optional

import torch
from megatron.core.models.mimo.submodules.base import ModalitySubmodules as _MegatronModalitySubmodules
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.utils import sharded_state_dict_default

STAGE_KWARGS = ("pre_process", "post_process")


def takes_stage_kwargs(module: Any) -> bool:
    """Whether `module` (a class or factory) names both stage keywords in its signature."""
    try:
        params = inspect.signature(module).parameters
    except (TypeError, ValueError):
        return False
    return all(k in params for k in STAGE_KWARGS)


class ModalitySubmodules(_MegatronModalitySubmodules):
    """Upstream's base: encoders, decoders and projections by spec, with upstream's `encode`.

    `encode` runs each encoder on its own inputs, in order: a tuple output gives its first
    element, an HF output its `last_hidden_state`; on the last stage (B, T, H) becomes (B*T, H)
    rows (a non-last stage hands its tensor on as it is).
    """

    is_last_stage = True

    @classmethod
    def from_spec(cls, module_spec: ModuleSpec, is_first_stage: bool = True,
                  is_last_stage: bool = True, vp_stage: Optional[int] = None) -> "ModalitySubmodules":
        """`vp_stage`: the interleaved chunk to build (its encoder must take `vp_stage`); the stage flags
        then name the first and the last virtual stage."""
        params = dict(module_spec.params or {})
        sub = module_spec.submodules or {}
        stage = {"pre_process": is_first_stage, "post_process": is_last_stage}
        if vp_stage is not None:
            stage["vp_stage"] = vp_stage
        encoders = {name: build_module(spec, **stage) if takes_stage_kwargs(spec.module) else build_module(spec)
                    for name, spec in sub.get("encoders", {}).items()}
        decoders = {name: build_module(spec) for name, spec in sub.get("decoders", {}).items()}
        # the projection feeds the language model: only the encoder's last stage has one
        in_proj = [build_module(s) for s in sub.get("input_projections", [])] if is_last_stage else []
        out_proj = [build_module(s) for s in sub.get("output_projections", [])]
        params.update(is_first_stage=is_first_stage, is_last_stage=is_last_stage)
        return cls(encoders=encoders, decoders=decoders, input_projections=in_proj, output_projections=out_proj,
                   **params)

    def encode(self, encoders_data_batch: Optional[Dict[str, Dict[str, Any]]]) -> List[torch.Tensor]:
        if not encoders_data_batch:
            return []
        modality = getattr(self, "modality", "") or type(self).__name__
        unknown = sorted(set(encoders_data_batch) - set(self.encoders))
        if unknown:
            raise ValueError(f"{modality}: unknown encoder key(s) {unknown}; expected {sorted(self.encoders)}")
        out = []
        for name, encoder in self.encoders.items():
            if name not in encoders_data_batch:
                raise ValueError(f"No inputs found for encoder '{name}' ({modality}; got keys "
                                 f"{sorted(encoders_data_batch)})")
            inputs = encoders_data_batch[name]
            if not isinstance(inputs, dict):
                raise ValueError(f"{modality}: inputs of encoder '{name}' must be a dict of tensors, "
                                 f"got {type(inputs).__name__}")
            out.append(self._rows(name, encoder(**inputs)))
        return out

    def _rows(self, name: str, output: Any) -> torch.Tensor:
        if isinstance(output, (tuple, list)):
            output = output[0]
        elif not isinstance(output, torch.Tensor) and hasattr(output, "last_hidden_state"):
            output = output.last_hidden_state
        if not self.is_last_stage:
            return output
        if output.dim() == 3:
            return output.reshape(-1, output.size(-1))
        if output.dim() != 2:
            raise ValueError(f"Encoder '{name}' output shape {tuple(output.shape)} is not supported: "
                             f"expected 3D (b, s, h) or 2D (b*s, h), got {output.dim()}D")
        return output


class StagedModalitySubmodules(ModalitySubmodules):
    """One modality: encoders by key, concatenated, then projected (last stage only)."""

    def __init__(self, encoders=None, decoders=None, input_projections=None, output_projections=None,
                 modality: str = "", pg_collection=None, is_first_stage: bool = True,
                 is_last_stage: bool = True, **kwargs):
        super().__init__(encoders=encoders, decoders=decoders, input_projections=input_projections,
                         output_projections=output_projections)
        self.modality = modality
        self.pg_collection = pg_collection
        self.is_first_stage, self.is_last_stage = is_first_stage, is_last_stage
        if len(self.input_projections) > 1:
            raise ValueError(f"{modality}: at most one input projection, got {len(self.input_projections)}")
        if not (is_first_stage and is_last_stage) and len(self.encoders) > 1:
            raise ValueError(f"{modality}: pipeline stages need at most one encoder to hand hidden states "
                             f"between, got {len(self.encoders)}")

    def decode(self, embeddings: torch.Tensor, data_batch: Dict) -> torch.Tensor:
        raise NotImplementedError(f"{self.modality}: no decoders")

    def combine_embeddings(self, embeddings: List[torch.Tensor]) -> torch.Tensor:
        if not embeddings:
            raise ValueError(f"{self.modality}: cannot combine an empty list of embeddings")
        return embeddings[0] if len(embeddings) == 1 else torch.cat(embeddings, dim=0)

    def project_embeddings(self, embeddings: List[torch.Tensor], is_input: bool = True) -> Optional[torch.Tensor]:
        if is_input:
            embeddings = self.combine_embeddings(embeddings)
        projections = self.input_projections if is_input else self.output_projections
        return projections[0](embeddings) if len(projections) else embeddings

    def forward(self, encoder_inputs: Optional[Dict[str, Any]] = None,
                hidden_states: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """First stage: raw inputs; later stages: the previous stage's hidden states.

        Last stage returns (rows, language hidden); other stages the encoder's hidden tensor.
        None when there is nothing to encode (no inputs, or no hidden states).
        """
        if self.is_first_stage:
            if hidden_states is not None:
                raise ValueError(f"{self.modality}: the first encoder stage takes modality_inputs, "
                                 f"not hidden states")
            embeddings = self.encode(encoder_inputs)
            if not embeddings:
                return None
        else:
            if encoder_inputs:
                raise ValueError(f"{self.modality}: a non-first encoder stage takes hidden states via "
                                 f"set_input_tensor, not modality_inputs")
            if hidden_states is None:
                return None
            # no encoder on this stage (upstream's stage-aware tests): the hidden states pass through
            encoders = list(self.encoders.values())
            embeddings = [encoders[0](hidden_states=hidden_states) if encoders else hidden_states]
        if not self.is_last_stage:
            return embeddings[0]
        return self.project_embeddings(embeddings, is_input=True)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata: Optional[dict] = None):
        """Each child's sharded state dict with this modality's own tp and dp_cp groups."""
        metadata = dict(metadata or {})
        metadata["dp_cp_group"] = self.pg_collection.dp_cp
        return _sharded(self, prefix, sharded_offsets, metadata, self.pg_collection.tp)


def _sharded(module: torch.nn.Module, prefix: str, offsets, metadata: dict, tp_group) -> dict:
    # ModuleDict/ModuleList have no sharded_state_dict, and megatron's default for them would
    # mark TP-split weights as replicated: descend into containers until a real module.
    out = {}
    for name, child in module.named_children():
        if isinstance(child, (torch.nn.ModuleDict, torch.nn.ModuleList)):
            out.update(_sharded(child, f"{prefix}{name}.", offsets, metadata, tp_group))
        else:
            out.update(sharded_state_dict_default(child, f"{prefix}{name}.", offsets, metadata, tp_group=tp_group))
    return out


class VisionModalitySubmodules(StagedModalitySubmodules):
    """Images: a ViT encoder (ours, megatron's CLIPViTModel or an HF vision tower) + projector."""


class AudioModalitySubmodules(StagedModalitySubmodules):
    """Audio: a conv-stem transformer encoder (ours or an HF one such as WhisperEncoder) + projector."""
