"""MimoModel: upstream megatron MIMO's newer, role-aware API, on explicit process groups.

A rank builds only the modules its role holds (from `module_to_grid_map`), at its pipeline stage
of each. `forward` dispatches on the role:
- COLOCATED (no grid map, or every module on the same ranks with one stage): encoders + language
  model in one call (`_forward_all_modules`) -> (lm_output, loss_mask).
- encoder ranks -> ({modality: tensor}, loss_mask): projected rows (num_rows, language hidden) on an
  encoder's last stage, its hidden tensor on other stages.
- language ranks -> ({"language": hidden}, loss_mask) on non-last stages, (lm_output, loss_mask)
  on the last: vocab-parallel logits (B, S, V/tp) without labels, per-token loss (B, S) with.
Stage inputs come from `set_input_tensor`; each forward consumes them (a stale tensor is never
reused by the next microbatch).
Context parallelism: a cp rank is given its own chunks of every token tensor (plan/sequence.py)
and only the encoder rows of those positions; the attention exchanges K/V. Sequence parallelism:
the first stage hands the decoder its TP rank's sequence slice (`_merge_sequence_slice`).
Interleaved pipelines (`virtual_pipeline_model_parallel_size` V in the language model's TransformerConfig,
megatron's field): a language rank builds V chunks, chunk c holding the layers of virtual stage
c * pp + pp_rank (megatron's `vp_stage`), the embedding in the first virtual stage and the output layer
in the last; `forward(..., chunk=c)` runs one of them. Chunk 0 is `language_model`, the others
`language_chunks[c - 1]`, so a model without chunks has exactly the parameters it always had.
An encoder whose config asks for V chunks is interleaved the same way: chunk 0 is
`modality_submodules[name]`, the others `modality_chunks[name][c - 1]`; its input embedding sits in the
first virtual stage, its final norm and projection in the last (rank pp-1's chunk V-1, which feeds the
bridge).
"""

import logging
from typing import Any, Dict, Optional

import torch
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer import MegatronModule
from megatron.core.transformer.spec_utils import build_module

from mimo_runtime.model.config import MimoModelConfig
from mimo_runtime.model.loss import vocab_parallel_cross_entropy
from mimo_runtime.model.sequence_parallel import scatter_to_sequence_parallel
from mimo_runtime.plan.roles import MIMO_LANGUAGE_MODULE_KEY, ModuleLayout, RankRole

logger = logging.getLogger(__name__)
LANG = MIMO_LANGUAGE_MODULE_KEY


class MimoModel(MegatronModule):
    """Multimodal model: modality submodules feeding a language model.

    `rank` (keyword, our extension): whose role to build from the grid map; default this
    process's rank. Lets tests build any rank's model from light fake grids without processes.
    """

    def __init__(self, mimo_config: MimoModelConfig, cp_group=None, tp_group=None, *, rank: Optional[int] = None):
        super().__init__(mimo_config.language_model_spec.params["config"])
        self.mimo_config = mimo_config
        self.cp_group, self.tp_group = cp_group, tp_group
        self.role = RankRole.build(list(mimo_config.modality_submodules_spec), mimo_config.module_to_grid_map, rank)
        self.special_token_ids = dict(mimo_config.special_token_ids or {})
        self.input_tensors = None
        # colocated layouts only: embeddings -> embeddings redistributed to the language layout
        self.colocated_bridge = None
        self.modality_submodules = torch.nn.ModuleDict()
        self._initialize_submodules()
        self._initialize_language_model()
        self._attach_tp_groups()

    # ---- construction -------------------------------------------------------------------------

    def _initialize_submodules(self) -> None:
        """Build the modality submodules this rank holds, each at its pipeline stage (one per virtual
        pipeline chunk of an interleaved encoder)."""
        self.modality_chunks = torch.nn.ModuleDict()
        for name, spec in self.mimo_config.modality_submodules_spec.items():
            if name not in self.role.modules:
                continue
            stage, chunks = self.role.modules[name], encoder_chunk_count(spec)
            built = [spec.module.from_spec(spec, is_first_stage=stage.is_first_stage and c == 0,
                                           is_last_stage=stage.is_last_stage and c == chunks - 1,
                                           vp_stage=c if chunks > 1 else None) for c in range(chunks)]
            self.modality_submodules[name] = built[0]
            if chunks > 1:
                self.modality_chunks[name] = torch.nn.ModuleList(built[1:])

    def _initialize_language_model(self) -> None:
        """Build the language model if this rank holds it (its spec's params carry the stage), one
        module per virtual pipeline chunk."""
        specs = language_chunk_specs(self.mimo_config.language_model_spec) if self.role.has_language_module else []
        self.language_model = build_module(specs[0]) if specs else None
        self.language_chunks = torch.nn.ModuleList(build_module(s) for s in specs[1:])

    @property
    def num_chunks(self) -> int:
        """Virtual pipeline chunks of the language model this rank holds (1 without interleaving)."""
        return 1 + len(self.language_chunks)

    def language_chunk(self, chunk: int):
        return self.language_model if chunk == 0 else self.language_chunks[chunk - 1]

    def encoder_chunks(self, name: str):
        """Every chunk of encoder `name` this rank holds, in chunk order (one without interleaving)."""
        rest = self.modality_chunks[name] if name in self.modality_chunks else []
        return [self.modality_submodules[name], *rest]

    def language_modules(self):
        """Every language chunk this rank holds, in chunk order (empty without the language model)."""
        return [] if self.language_model is None else [self.language_model, *self.language_chunks]

    def shared_embedding_or_output_weight(self):
        """The tied embedding / output weight this rank holds (first or last virtual stage), or None."""
        for lm in self.language_modules():
            weight = lm.shared_embedding_or_output_weight() if lm.share_embeddings_and_output_weights else None
            if weight is not None:
                return weight
        return None

    def _attach_tp_groups(self) -> None:
        # megatron's default sharded_state_dict reads parallel_state's TP group from a module
        # without a `tp_group` attribute (e.g. MultimodalProjector): give it its module's group
        for name in self.role.modules:
            roots = self.language_modules() if name == LANG else self.encoder_chunks(name)
            pgs = self.module_pg_collection(name)
            if pgs is None:  # built without process groups (upstream's way): parallel_state's are its groups
                continue
            tp = pgs.tp
            for m in (m for root in roots for m in root.modules()):
                if isinstance(m, MegatronModule) and getattr(m, "tp_group", None) is None:
                    m.tp_group = tp

    def module_pg_collection(self, module: str):
        """The ProcessGroupCollection the given held module was built with."""
        root = self.language_model if module == LANG else self.modality_submodules[module]
        return getattr(root, "pg_collection", None)

    # ---- seed API -----------------------------------------------------------------------------

    def set_input_tensor(self, input_tensor) -> None:
        """Inputs of the next forward from the previous stage(s).

        Dict[str, Tensor]: by module name (encoder hidden states for a non-first encoder stage;
        encoder embeddings for the first language stage; {"language": h} for later LM stages).
        Tensor or [Tensor]: the language model's hidden states (megatron's convention).
        """
        if isinstance(input_tensor, list):
            input_tensor = input_tensor[0]
        if isinstance(input_tensor, dict):
            self.input_tensors = {k: v[0] if isinstance(v, list) and len(v) == 1 else v
                                  for k, v in input_tensor.items()}
            return
        self.input_tensors = input_tensor
        if self.language_model is not None:
            self.language_model.set_input_tensor(input_tensor)

    def get_text_embeddings(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor],
                            special_token_ids: Dict[str, int]) -> torch.Tensor:
        """Embeddings (N, H) of the N non-special tokens of input_ids (B, S), row-major order.

        position_ids: (B, S), or 3-D mRoPE ids (rope_dim, B, S) whose first channel is the
        absolute text position (as upstream).
        """
        input_ids = _batched(input_ids)
        position_ids = _text_positions(position_ids)
        if position_ids is None:
            position_ids = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
        position_ids = _batched(position_ids)
        if position_ids.shape != input_ids.shape:
            raise ValueError(f"position_ids shape {tuple(position_ids.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}")
        text = torch.ones_like(input_ids, dtype=torch.bool)
        for token_id in special_token_ids.values():
            text &= input_ids != token_id
        b, s = text.nonzero(as_tuple=True)
        emb = self.language_model.embedding(input_ids=input_ids[b, s].unsqueeze(0),
                                            position_ids=position_ids[b, s].unsqueeze(0))
        return emb.squeeze(1)  # (N, 1, H) -> (N, H)

    def align_embeddings_by_token_positions(self, modality_embeddings: Dict[str, torch.Tensor],
                                            input_ids: torch.Tensor, special_token_ids: Dict[str, int]) -> torch.Tensor:
        """Scatter each modality's rows (N_m, H) onto its special tokens, text onto the rest -> (S, B, H).

        Rows fill positions in row-major (sample, position) order. Any count mismatch raises
        (upstream's wording: "Number of {name} tokens (n) does not match number of {name} embeddings (m)").
        """
        if not modality_embeddings:
            raise ValueError("No modality embeddings provided. At least one modality is required.")
        input_ids = _batched(input_ids)
        ref = modality_embeddings.get("text", next(iter(modality_embeddings.values())))
        hidden = ref.size(-1)
        batch, seq = input_ids.shape
        combined = torch.zeros(batch, seq, hidden, dtype=ref.dtype, device=ref.device)
        for name, emb in modality_embeddings.items():
            if name == "text":
                mask = torch.ones_like(input_ids, dtype=torch.bool)
                for token_id in special_token_ids.values():
                    mask &= input_ids != token_id
            elif name in special_token_ids:
                mask = input_ids == special_token_ids[name]
            else:
                raise ValueError(f"No special token ID defined for modality {name} (known: {sorted(special_token_ids)})")
            if emb.dim() != 2 or emb.size(1) != hidden:
                raise ValueError(f"{name}: embeddings must have shape (rows, {hidden}), got {tuple(emb.shape)}")
            count = int(mask.sum().item())
            if count != emb.size(0):
                which = "" if name == "text" else f" (special token id {special_token_ids[name]})"
                raise ValueError(f"Number of {name} tokens ({count}) does not match number of {name} "
                                 f"embeddings ({emb.size(0)}){which}")
            combined.masked_scatter_(mask.unsqueeze(-1).expand_as(combined), emb.flatten())
        return combined.transpose(0, 1).contiguous()

    def forward(self, input_ids: Optional[torch.Tensor], position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, loss_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, modality_inputs: Optional[Dict[str, Dict[str, Any]]] = None,
                packing_kwargs: Optional[dict] = None, chunk: int = 0):
        """(output, loss_mask); the output depends on the role (module docstring) and, on a language
        rank of an interleaved pipeline, on the chunk: only the first virtual stage merges embeddings,
        only the last returns lm_output (on an interleaved encoder's ranks: only the first virtual stage
        takes raw inputs, only the last returns projected rows).

        attention_mask: None (causal only), (B, S) with 1 = real token / 0 = padding, or megatron's
        bool (B, 1, S, S) with True = masked out. packing_kwargs: cu_seqlens_* / max_seqlen_* of a
        packed (THD) batch, input_ids (1, T).
        """
        input_tensors, self.input_tensors = self.input_tensors, None
        self._check_modality_inputs(modality_inputs)
        if self.role.mode == ModuleLayout.COLOCATED:
            return self._forward_all_modules(input_ids, position_ids, attention_mask, loss_mask, labels,
                                             modality_inputs, packing_kwargs)
        if self.role.has_modality_modules and self.role.has_language_module:
            raise ValueError("encoders and the language model on one rank need a colocated layout (every "
                             f"module on the same ranks, one stage); this rank holds {sorted(self.role.modules)}")
        if self.role.has_modality_modules:
            return self._forward_encoders(modality_inputs, input_tensors, chunk), loss_mask
        if self.role.has_language_module:
            return self._forward_language_module(input_ids, position_ids, attention_mask, labels, input_tensors,
                                                 packed_seq_params=_packed_seq_params(packing_kwargs),
                                                 chunk=chunk), loss_mask
        raise RuntimeError(f"this rank holds no module (role {self.role})")

    def _forward_encoders(self, modality_inputs: Optional[Dict[str, Dict[str, Any]]],
                          input_tensors: Optional[Dict[str, torch.Tensor]], chunk: int = 0) -> Dict[str, torch.Tensor]:
        """Run chunk `chunk` of the encoders this rank holds: raw inputs on the first virtual stage,
        hidden states on the others; only the last virtual stage projects."""
        if input_tensors is not None and not isinstance(input_tensors, dict):
            raise ValueError("encoder stages take set_input_tensor({modality: hidden}), got a bare tensor")
        for name in input_tensors or {}:
            if name not in self.modality_submodules or (self.role.is_first_stage(name) and chunk == 0):
                raise ValueError(f"set_input_tensor got '{name}', but this rank holds no non-first stage of "
                                 f"'{name}' (it holds {sorted(self.role.modules)})")
        outputs = {}
        for name in self.role.modality_module_names:
            chunks = self.encoder_chunks(name)
            if not 0 <= chunk < len(chunks):
                raise ValueError(f"chunk {chunk}: this rank holds {len(chunks)} chunk(s) of encoder '{name}'")
            sub = chunks[chunk]
            if self.role.is_first_stage(name) and chunk == 0:
                raw = (modality_inputs or {}).get(name)
                out = sub(encoder_inputs=raw) if raw is not None else None
            else:
                hidden = (input_tensors or {}).get(name)
                out = sub(hidden_states=hidden) if hidden is not None else None
            if out is None and self.role.is_last_stage(name) and chunk == len(chunks) - 1:
                # a text-only microbatch: no rows, but the modality's output still exists (upstream)
                out = self._no_rows(sub)
            if out is not None:
                outputs[name] = out
        return outputs

    def _no_rows(self, sub: torch.nn.Module) -> torch.Tensor:
        config = self.mimo_config.language_model_spec.params["config"]
        param = next(sub.parameters(), None)
        return torch.zeros(0, config.hidden_size, dtype=config.params_dtype,
                           device=param.device if param is not None else None)

    def _forward_language_module(self, input_ids, position_ids, attention_mask, labels, input_tensors,
                                 packed_seq_params: Optional[PackedSeqParams] = None, chunk: int = 0):
        """First stage: merge received encoder rows with text embeddings; later stages: hidden in."""
        if not 0 <= chunk < self.num_chunks:
            raise ValueError(f"chunk {chunk}: this rank holds {self.num_chunks} language chunk(s)")
        lm = self.language_chunk(chunk)
        first = self.role.is_first_stage(LANG) and chunk == 0
        last = self.role.is_last_stage(LANG) and chunk == self.num_chunks - 1
        if first:
            if input_tensors is not None and not isinstance(input_tensors, dict):
                raise ValueError("the first language stage takes set_input_tensor({modality: rows})")
            embeddings = dict(input_tensors or {})
            if LANG in embeddings:
                raise ValueError("the first language stage takes encoder embeddings, not 'language' hidden states")
            decoder_input = self._merge(input_ids, position_ids, embeddings)
        else:
            if isinstance(input_tensors, dict) and set(input_tensors) - {LANG}:
                raise ValueError(f"a non-first language stage takes only 'language' hidden states, got "
                                 f"{sorted(input_tensors)} (encoder rows go to the first stage)")
            hidden = input_tensors.get(LANG) if isinstance(input_tensors, dict) else input_tensors
            if hidden is None:
                raise ValueError("a non-first language stage needs set_input_tensor({'language': h}) first")
            lm.set_input_tensor(hidden)
            decoder_input = None
        out = self._run_language_model(decoder_input, position_ids, attention_mask, labels, packed_seq_params, lm, last)
        return out if last else {LANG: out}

    def _forward_all_modules(self, input_ids, position_ids, attention_mask, loss_mask, labels, modality_inputs,
                             packing_kwargs: Optional[dict] = None):
        """Every module on this rank: encoders, merge, language model -> (lm_output, loss_mask)."""
        embeddings = {}
        for name, sub in self.modality_submodules.items():
            raw = (modality_inputs or {}).get(name)
            if raw is not None:
                out = sub(encoder_inputs=raw)
                if out is not None:
                    embeddings[name] = out
        if self.colocated_bridge is not None:
            # encoders laid out differently from the language model on the same ranks: move each
            # encoder's rows to the ranks whose language replica uses them (comm/exchange.py)
            embeddings = self.colocated_bridge(embeddings)
        decoder_input = self._merge(input_ids, position_ids, embeddings)
        out = self._run_language_model(decoder_input, position_ids, attention_mask, labels,
                                       _packed_seq_params(packing_kwargs))
        return out, loss_mask

    # ---- helpers ------------------------------------------------------------------------------

    def _merge(self, input_ids, position_ids, embeddings: Dict[str, torch.Tensor]) -> torch.Tensor:
        if input_ids is None:
            raise ValueError("the first language stage needs input_ids")
        unknown = sorted(set(embeddings) - set(self.special_token_ids))
        if unknown:
            raise ValueError(f"unknown modality {unknown} in encoder embeddings; "
                             f"known: {sorted(self.special_token_ids)}")
        if self.language_model.config.sequence_parallel:
            return self._merge_sequence_slice(input_ids, position_ids, embeddings)
        text = self.get_text_embeddings(input_ids, position_ids, self.special_token_ids)
        # a modality with no rows may be left out; its special tokens (if any) then fail the count
        for name in self.special_token_ids:
            if name not in embeddings:
                embeddings[name] = text.new_zeros(0, text.size(-1))
        embeddings["text"] = text
        return self.align_embeddings_by_token_positions(embeddings, input_ids, self.special_token_ids)

    def _merge_sequence_slice(self, input_ids, position_ids, embeddings: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Sequence parallelism: this TP rank's slice (S/tp, B, H) of the merged decoder input.

        Every TP rank embeds the whole (cp-local) sequence, since the vocab-parallel embedding sums
        over TP, then keeps its slice (whose backward all-gathers, so every vocab shard gets every
        position's gradient) and places there the encoder rows it received: those of its own
        positions only (the bridge sends each TP rank just those).
        """
        input_ids = _batched(input_ids)
        tp = self.language_model.pg_collection.tp
        full = self.language_model.embedding(input_ids=input_ids, position_ids=_text_positions(position_ids))
        local = scatter_to_sequence_parallel(full, tp).transpose(0, 1)  # (B, S/tp, H)
        n = local.size(1)
        ids = input_ids[:, tp.rank() * n:(tp.rank() + 1) * n]
        for name, token_id in self.special_token_ids.items():
            rows = embeddings.get(name, local.new_zeros(0, local.size(-1)))  # no rows: its tokens fail the count
            mask = ids == token_id
            if int(mask.sum()) != rows.size(0):
                raise ValueError(f"{name}: this sequence-parallel slice holds {int(mask.sum())} '{name}' special "
                                 f"tokens but {rows.size(0)} embeddings were given")
            local = local.masked_scatter(mask.unsqueeze(-1).expand_as(local), rows.to(local.dtype))
        return local.transpose(0, 1).contiguous()

    def _run_language_model(self, decoder_input, position_ids, attention_mask, labels, packed_seq_params,
                            lm=None, last: Optional[bool] = None):
        # position_ids go through for rotary embeddings that read them (mRoPE); input_ids never do:
        # decoder_input replaces the embedding lookup (upstream's contract)
        lm = self.language_model if lm is None else lm
        last = self.role.is_last_stage(LANG) if last is None else last
        out = lm(input_ids=None, position_ids=position_ids,
                                  attention_mask=_attention_mask(attention_mask), decoder_input=decoder_input,
                                  labels=None, packed_seq_params=packed_seq_params)
        if labels is not None and last:
            # megatron's loss path reads parallel_state; ours uses the LM's own tp group
            return vocab_parallel_cross_entropy(out, labels, lm.tp_group)
        return out

    def _check_modality_inputs(self, modality_inputs) -> None:
        if modality_inputs is None:
            return
        if not isinstance(modality_inputs, dict):
            raise ValueError(f"modality_inputs must be a dict {{modality: {{encoder: inputs}}}}, "
                             f"got {type(modality_inputs).__name__}")
        known = sorted(self.mimo_config.modality_submodules_spec)
        for name, inputs in modality_inputs.items():
            if name not in self.mimo_config.modality_submodules_spec:
                raise ValueError(f"unknown modality '{name}' in modality_inputs; this model has {known}")
            if inputs is None:
                continue
            if name not in self.modality_submodules:
                raise ValueError(f"modality_inputs has '{name}', but this rank holds no '{name}' encoder "
                                 f"(it holds {sorted(self.role.modules)})")
            if not self.role.is_first_stage(name):
                raise ValueError(f"modality_inputs has '{name}', but this rank holds a non-first stage of "
                                 f"'{name}', which takes hidden states via set_input_tensor")

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata: Optional[dict] = None):
        """Keys of the full model (global layer indices, tied output -> embedding key) whatever the
        topology; each module's tp and dp_cp groups come from its own pg_collection."""
        out = {}
        for name, sub in self.modality_submodules.items():
            out.update(sub.sharded_state_dict(f"{prefix}modality_submodules.{name}.", sharded_offsets, metadata))
            # an interleaved encoder's other chunks: the encoder's keys (megatron offsets layers by vp_stage)
            for c, chunk in enumerate(self.encoder_chunks(name)[1:]):
                out[f"{prefix}modality_chunks.{name}.{c}"] = chunk.sharded_state_dict(
                    f"{prefix}modality_submodules.{name}.", sharded_offsets, metadata)
        for c, lm in enumerate(self.language_modules()):
            md = dict(metadata or {})
            md["dp_cp_group"] = lm.pg_collection.dp_cp
            # every chunk's tensors carry the language model's keys (megatron offsets layers by vp_stage);
            # chunks other than 0 nest under their own name, so their entries do not replace chunk 0's
            part = lm.sharded_state_dict(f"{prefix}language_model.", sharded_offsets, md)
            if c == 0:
                out.update(part)
            else:
                out[f"{prefix}language_chunks.{c - 1}"] = part
        return out


def encoder_chunk_count(spec) -> int:
    """Virtual pipeline chunks a modality spec asks for: its encoder config's
    `virtual_pipeline_model_parallel_size` under pp > 1 (megatron's field, as for the language model)."""
    encoders = list((spec.submodules or {}).get("encoders", {}).values())
    config = (encoders[0].params or {}).get("config") if len(encoders) == 1 else None
    if (getattr(config, "pipeline_model_parallel_size", None) or 1) == 1:  # None, or an HF config
        return 1
    return getattr(config, "virtual_pipeline_model_parallel_size", None) or 1


def language_chunk_specs(spec):
    """One spec per virtual pipeline chunk of the language model: megatron's `vp_stage` c, the
    embedding only in chunk 0 of the first stage, the output layer only in the last chunk of the last."""
    config = spec.params["config"]
    chunks = config.virtual_pipeline_model_parallel_size or 1
    if chunks == 1 or config.pipeline_model_parallel_size == 1:
        return [spec]
    return [type(spec)(module=spec.module, submodules=spec.submodules, params=dict(
        spec.params, vp_stage=c, pre_process=spec.params.get("pre_process", True) and c == 0,
        post_process=spec.params.get("post_process", True) and c == chunks - 1)) for c in range(chunks)]


def _batched(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 1:
        return x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"input_ids/position_ids must be (B, S) or (S,), got shape {tuple(x.shape)}")
    return x


def _text_positions(position_ids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The absolute positions text embeddings use: channel 0 of 3-D (rope_dim, B, S) mRoPE ids."""
    if position_ids is not None and position_ids.dim() == 3:
        return position_ids[0]
    return position_ids


def _attention_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    if mask.dim() == 2:  # (B, S) keep-mask -> megatron's (B, 1, 1, S), True = masked out
        return ~mask.to(torch.bool)[:, None, None, :]
    if mask.dim() == 4:
        return mask.to(torch.bool)
    raise ValueError(f"attention_mask must be (B, S) or (B, 1, S, S), got shape {tuple(mask.shape)}")


def _packed_seq_params(packing_kwargs: Optional[dict]) -> Optional[PackedSeqParams]:
    """PackedSeqParams (THD) from packing_kwargs. max_seqlen_* are recomputed from the cu_seqlens:
    megatron's RoPE reads max_seqlen == total tokens as positions running on across sequences."""
    if packing_kwargs is None:
        return None
    kw = {k: v for k, v in packing_kwargs.items() if not k.startswith("max_seqlen")}
    for key, value in kw.items():
        if key.startswith("cu_seqlens") and value is not None:
            kw[key] = torch.as_tensor(value).to(torch.int32)
    if kw.get("cu_seqlens_q") is None:
        raise ValueError("packing_kwargs needs cu_seqlens_q")
    kw.setdefault("cu_seqlens_kv", kw["cu_seqlens_q"])
    for side in ("q", "kv"):
        cu = kw.get(f"cu_seqlens_{side}_padded")
        cu = kw[f"cu_seqlens_{side}"] if cu is None else cu
        kw[f"max_seqlen_{side}"] = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
    return PackedSeqParams(qkv_format="thd", **kw)
