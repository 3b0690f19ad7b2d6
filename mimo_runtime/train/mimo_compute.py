"""What a rank computes for one action, for a MimoModel: the model-specific half of the executor.

The executor (executor.py) owns the order, the communication and autograd; this class owns the
calls into MimoModel (set_input_tensor, forward by role), the loss, and which rows of the bridge
belong to which sample. On a zero-bubble list it also owns the deferred weight gradients
(model/weight_grad.py): B records what each linear's backward deferred, W computes it.
"""

import contextlib
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.comm.exchange import exchange_rows
from mimo_runtime.model.factory import seq_length
from mimo_runtime.model.weight_grad import WeightGradQueue, split_weight_gradients
from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, ModuleLayout, Plan
from mimo_runtime.train.captions import count_captions
from mimo_runtime.train.feed import Feeder
from mimo_runtime.train.grads import all_reduce_grads
from mimo_runtime.train.sequence_cut import count_cut_captions
from mimo_runtime.train.optim import loss_share, module_parameters
from mimo_runtime.train.precision import wire_dtype

COLOCATED = "*"


class MimoCompute:
    def __init__(self, plan: Plan, groups, model, rank: int, feeder: Feeder, loss_fn: Callable,
                 split_weights: bool = False):
        self.plan, self.groups, self.model, self.rank = plan, groups, model, rank
        self.feeder, self.loss_fn = feeder, loss_fn
        param = next(model.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.hidden = model.mimo_config.language_model_spec.params["config"].hidden_size
        self.seq_length = seq_length(model.mimo_config)
        self.bridges = {}
        self.caption_counts = [0, 0]  # forward-only steps: (exact captions, captioned samples)
        # the running step's (loss denominator, non-padding tokens), all-reduced on the device (begin_step)
        self._counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        # zero_bubble: linears defer their weight gradients from B to W, one queue per module
        self.weight_queues: Dict[str, WeightGradQueue] = {}
        if split_weights:
            colocated = plan.layout == ModuleLayout.COLOCATED  # one node, "*", runs every module
            for name in [COLOCATED] if colocated else plan.modules_on(rank):
                self.weight_queues[name] = WeightGradQueue()
                for root in _module_roots(model, name):
                    split_weight_gradients(root, self.weight_queues[name])

    def attach(self, bridges) -> None:
        """The executor's bridges: colocated layouts use them in-process (comm/exchange.py)."""
        self.bridges = bridges

    def _relaid_encoders(self) -> List[str]:
        """Colocated encoders whose TP/DP layout differs from the language model's."""
        if self.plan.layout != ModuleLayout.COLOCATED:
            return []
        lang = self.plan.modules[LANG]
        return [n for n, m in self.plan.encoders.items() if (m.tp, m.cp, m.dp) != (lang.tp, lang.cp, lang.dp)]

    def wire_dtype(self, module: str, peer: Optional[str] = None) -> torch.dtype:
        """What `module`'s messages to its own stages (peer None or itself) or across the bridge to
        `peer` travel in: bf16 when every module involved computes in bf16 (train/precision.py)."""
        return wire_dtype(self.plan, {module, peer or module} - {COLOCATED}, self.dtype)

    # ---- data the bridge needs ----
    def _tokens(self, module: str, step: int, mb: int) -> Dict[str, torch.Tensor]:
        return self.feeder.tokens(step, mb, self.plan.modules[LANG if module == COLOCATED else module], self.rank)

    def encoder_rows(self, enc: str, step: int, mb: int) -> List:
        """Rows per sample of this encoder replica's output (sender side of the bridge); the slot of
        each row when the language model cuts its sequences over several (context/sequence parallel)."""
        lang = self.plan.language
        if lang.cp * lang.sequence_shards > 1:
            return self.feeder.row_slots(step, mb, enc, self.rank, self.model.special_token_ids[enc])
        return self.feeder.rows_per_sample(step, mb, enc, self.rank)

    def language_rows(self, enc: str, step: int, mb: int) -> List[int]:
        """Rows per sample the language stage expects: its special tokens (receiver side, the handshake),
        within this rank's part of the sequence (its cp chunks, and its TP slice with SP)."""
        tokens, lang = self._tokens(LANG, step, mb), self.plan.language
        mask = tokens["input_ids"] == self.model.special_token_ids[enc]
        sample = tokens.get("sample")  # packed: each token's sample
        if lang.sequence_parallel:  # the model keeps TP slice t of the cp-local sequence
            n, t = mask.size(1) // lang.tp, lang.coords(self.rank).tp
            mask = mask[:, t * n:(t + 1) * n]
            sample = None if sample is None else sample[:, t * n:(t + 1) * n]
        if sample is None:
            return mask.sum(dim=1).tolist()
        return torch.bincount(sample[mask], minlength=len(self.feeder.samples(step, mb, lang, self.rank))).tolist()

    # ---- stage-to-stage shapes both sides know (the executor skips shape headers, may use shared memory) ----
    def p2p_shape(self, module: str, step: int, mb: int) -> Optional[Tuple[int, int, int]]:
        """The hidden states between a module's stages, from data every stage of a replica reads: the
        language model's (sequence, samples, hidden) from the token batch (cp-local, and this TP rank's
        slice with SP), an encoder's (tokens per item, items, hidden) from its samples' item counts.
        None for an encoder that does not say its stages' shape (`tokens_per_item` and `config`)."""
        if module != LANG:
            encoder = next(iter(self.model.modality_submodules[module].encoders.values()), None)
            tokens, config = getattr(encoder, "tokens_per_item", None), getattr(encoder, "config", None)
            if tokens is None or config is None:
                return None
            rows = sum(self.feeder.rows_per_sample(step, mb, module, self.rank))
            return (tokens, rows // self.feeder.tokens_per_item[module], config.hidden_size)
        lang = self.plan.language
        ids = self._tokens(LANG, step, mb)["input_ids"]
        return (ids.size(1) // lang.sequence_shards, ids.size(0), self.hidden)

    def p2p_max_shape(self, module: str) -> Optional[Tuple[int, int, int]]:
        """An upper bound of `p2p_shape` for sizing shared-memory slots (None: unknown sequence length)."""
        if module != LANG or self.seq_length is None:
            return None
        lang = self.plan.language
        return (-(-self.seq_length // (lang.cp * lang.sequence_shards)), self.plan.micro_batch, self.hidden)

    def _packing_kwargs(self, tokens: Dict[str, torch.Tensor]):
        """Packed (THD) batches: the cu_seqlens MimoModel turns into PackedSeqParams. Every language
        stage derives them from the same data, so each PP stage gets them for each microbatch."""
        if "cu_seqlens" not in tokens:
            return None
        cu, padded = tokens["cu_seqlens"], tokens["cu_seqlens_padded"]
        return {"cu_seqlens_q": cu, "cu_seqlens_kv": cu, "cu_seqlens_q_padded": padded,
                "cu_seqlens_kv_padded": padded}

    # ---- the loss denominator ----
    def begin_step(self, step: int) -> None:
        """Collective over the world, before a step's first action: the masked tokens of global batch
        `step`, summed from what each loss-reporting rank reads anyway (its replica's tokens, its cp
        part), so no rank loads the global batch. Every rank learns it (evaluation weights by it)."""
        local = content = 0
        if loss_share(self.plan, self.rank, 1.0):
            lang, mbs = self.plan.modules[LANG], range(self.plan.num_microbatches)
            local = sum(int(self._tokens(LANG, step, mb)["loss_mask"].sum()) for mb in mbs)
            if lang.coords(self.rank).cp == 0:  # whole samples: one rank of each replica counts them
                content = sum(self.feeder.content_tokens(step, mb, lang, self.rank) for mb in mbs)
        buf = torch.tensor([local, content], dtype=torch.float64, device=self.device)
        dist.all_reduce(buf)
        self._counts = buf  # stays on the device: the losses divide by it, the host reads it at step end

    @property
    def loss_tokens(self) -> int:
        """The running step's loss denominator, on the host (evaluation weights, after the step)."""
        return int(self._counts[0].item())

    @property
    def content_tokens(self) -> int:
        """The running step's non-padding tokens, on the host (metrics, after the step)."""
        return int(self._counts[1].item())

    # ---- forward ----
    def forward(self, module: str, step: int, mb: int, inputs: Dict[str, torch.Tensor], st,
                chunk: int = 0) -> torch.Tensor:
        # received bf16 (the wire dtype) stays the autograd leaf: the module computes from an fp32 cast
        # of it and the leaf's gradient, sent back, is bf16 too
        inputs = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        if module == LANG:
            return self._forward_language(step, mb, inputs, st, chunk)
        if module == COLOCATED:
            if chunk:
                raise ValueError(f"the colocated model runs one chunk (got chunk {chunk})")
            return self._forward_colocated(step, mb, st)
        return self._forward_encoder(module, step, mb, inputs, chunk)

    def _forward_encoder(self, name: str, step: int, mb: int, inputs, chunk: int = 0) -> torch.Tensor:
        if self.plan.modules[name].coords(self.rank).pp == 0 and chunk == 0:  # the first virtual stage
            self.model.set_input_tensor(None)
            raw = {name: self._on_device(self.feeder.modality_inputs(step, mb, name, self.rank))}
        else:
            self.model.set_input_tensor(inputs)
            raw = None
        out, _ = self.model(input_ids=None, modality_inputs=raw, chunk=chunk)
        return out[name]

    def _forward_language(self, step: int, mb: int, inputs, st, chunk: int = 0) -> torch.Tensor:
        m = self.plan.modules[LANG]
        tokens = self._on_device(self._tokens(LANG, step, mb))
        self.model.set_input_tensor(inputs)
        out, _ = self.model(input_ids=tokens["input_ids"], position_ids=tokens["position_ids"],
                            attention_mask=None, loss_mask=tokens["loss_mask"], labels=None,
                            packing_kwargs=self._packing_kwargs(tokens), chunk=chunk)
        if m.coords(self.rank).pp < m.pp - 1 or chunk < self.model.num_chunks - 1:  # not the last virtual stage
            return out[LANG]
        return self._loss(out, tokens, st)

    def _forward_colocated(self, step: int, mb: int, st) -> torch.Tensor:
        tokens = self._on_device(self._tokens(LANG, step, mb))
        relaid = self._relaid_encoders()

        def redistribute(embeddings: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
            return {n: exchange_rows(e, self.bridges[n], self.encoder_rows(n, step, mb), self.language_rows(n, step, mb),
                                     self.wire_dtype(n, LANG))
                    if n in relaid else e for n, e in embeddings.items()}

        self.model.colocated_bridge = redistribute if relaid else None
        self.model.set_input_tensor(None)
        logits, _ = self.model(input_ids=tokens["input_ids"], position_ids=tokens["position_ids"],
                               attention_mask=None, loss_mask=tokens["loss_mask"], labels=None,
                               modality_inputs=self._on_device(self.feeder.all_modality_inputs(step, mb, self.rank)),
                               packing_kwargs=self._packing_kwargs(tokens))
        return self._loss(logits, tokens, st)

    def _on_device(self, batch):
        """The feeder's CPU tensors on the model's device (the same objects on CPU); nested dicts too."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._on_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._on_device(v) for v in batch)
        return batch

    def _loss(self, logits, tokens, st) -> torch.Tensor:
        total = self.loss_fn(logits, tokens["labels"], tokens["loss_mask"], self.groups[LANG].pgs.tp)
        loss = total / self._counts[0].to(total.dtype)  # a whole count: exact in fp32, no host sync
        st.loss_sum = st.loss_sum + loss.detach().double()  # summed on the device, read once at step end
        if not st.train:
            correct, captioned = self._count_captions(logits.detach(), tokens)
            self.caption_counts[0] += correct
            self.caption_counts[1] += captioned
        return loss

    def _count_captions(self, logits, tokens):
        pgs, lang = self.groups[LANG].pgs, self.plan.language
        if lang.cp == 1 and "sample" not in tokens:
            return count_captions(logits, tokens, pgs.tp)
        return count_cut_captions(logits, tokens, pgs.tp, pgs.cp, self.plan.micro_batch)

    # ---- gradients ----
    def deferring_weight_grads(self, module: str, chunk: int, step: int, mb: int):
        """Context of a B action's backward: the split linears defer their weight gradients under
        (chunk, step, mb) (nothing changes without zero_bubble)."""
        queue = self.weight_queues.get(module)
        return contextlib.nullcontext() if queue is None else queue.recording((chunk, step, mb))

    def weight_grads(self, module: str, chunk: int, step: int, mb: int) -> None:
        """A W action: the weight gradients its B deferred."""
        queue = self.weight_queues.get(module)
        if queue is None:
            raise RuntimeError(f"{module}: a W action, but this run does not split weight gradients "
                               f"(train.schedule zero_bubble does)")
        queue.compute((chunk, step, mb))

    def reduce_grads(self, module: str) -> None:
        """SUM over each module's dp_cp group; tied embeddings also over the embedding group;
        sequence-parallel parameters of the language model also over its TP group."""
        if module in self.weight_queues:  # a list without a W for some B still gets every gradient
            self.weight_queues[module].flush()
        for name in (list(self.plan.modules) if module == COLOCATED else [module]):
            pgs = self.groups[name].pgs
            if name == LANG and self.plan.modules[LANG].sequence_parallel:
                # norms and row-linear biases saw only this TP rank's slice of the sequence
                all_reduce_grads([p for p in module_parameters(self.model, name)
                                  if getattr(p, "sequence_parallel", False)], pgs.tp)
            all_reduce_grads(module_parameters(self.model, name), pgs.dp_cp)
            lm = self.model.language_model
            if name == LANG and self.plan.modules[LANG].pp > 1 and lm.share_embeddings_and_output_weights:
                shared = self.model.shared_embedding_or_output_weight()
                if shared is not None:
                    all_reduce_grads([shared], pgs.embd)


def _module_roots(model, name: str) -> List[torch.nn.Module]:
    if name == COLOCATED:
        return [model]
    if name == LANG:
        return model.language_modules()
    return model.encoder_chunks(name)
