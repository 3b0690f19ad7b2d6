"""The language model: megatron's GPTModel minus its parallel_state and CUDA assumptions.

Three pieces need replacing on CPU with explicit groups:
- `RotaryEmbedding.get_emb` moves its frequencies to CUDA on first use, and its context-parallel
  slice (`get_pos_emb_on_this_cp_rank`) builds its index on CUDA; `PortableRotaryEmbedding` keeps
  both on the model's device (the cut is plan/sequence.py's, the one the data and attention use).
- `setup_embeddings_and_output_layer` moves the tied output weight to CUDA and all-reduces it
  over the embedding group to copy the first stage's values; our keyed initialization already
  gives both copies the same values, so only the bookkeeping attributes are set.
- `tie_embeddings_and_output_weights_state_dict` reads parallel_state's DP rank for the replica
  id of the last stage's copy; we read it from the dp_cp group in the metadata instead.
With sequence parallelism (model/sequence_parallel.py) the inline-built output layer gets the
portable SP all-gather. Loss is never computed here (its vocab_parallel_cross_entropy reads parallel_state's TP group);
see `mimo_runtime.model.loss`.
"""

import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.tensor_parallel.layers import ColumnParallelLinear
from megatron.core.utils import make_tp_sharded_tensor_for_checkpoint

from mimo_runtime.model.sequence_parallel import PortableColumnParallelLinear, use_portable_rng_tracker
from mimo_runtime.plan.sequence import local_indices


class PortableRotaryEmbedding(RotaryEmbedding):
    """RotaryEmbedding whose frequencies stay on the device they were created on."""

    def get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
        freqs = self.get_freqs_non_repeated(max_seq_len, offset)
        if self.rotary_interleaved:
            emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
        else:
            emb = torch.cat((freqs, freqs), dim=-1)
        return emb[:, None, None, :]

    def forward(self, max_seq_len: int, offset: int = 0, packed_seq: bool = False, cp_group=None) -> torch.Tensor:
        emb = self.get_emb(max_seq_len, offset)
        cp_group = cp_group if cp_group is not None else self.cp_group
        if cp_group is not None and cp_group.size() > 1 and not packed_seq:
            # this cp rank's chunks of the positions (packed THD is cut per sequence when applied)
            idx = local_indices(emb.size(0), cp_group.size(), cp_group.rank())
            emb = emb.index_select(0, torch.tensor(idx, dtype=torch.long, device=emb.device))
        return emb


class LanguageModel(GPTModel):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(getattr(self, "rotary_pos_emb", None)) is RotaryEmbedding:
            # same state, portable get_emb (GPTModel builds the rotary module inline)
            self.rotary_pos_emb.__class__ = PortableRotaryEmbedding
        if self.config.sequence_parallel:
            use_portable_rng_tracker()  # SP layers fork megatron's CUDA RNG tracker around dropout
            if type(getattr(self, "output_layer", None)) is ColumnParallelLinear:
                # GPTModel builds its output layer inline: give it the portable SP all-gather
                self.output_layer.__class__ = PortableColumnParallelLinear

    def setup_embeddings_and_output_layer(self) -> None:
        if self.pre_process:
            self.embedding.word_embeddings.weight.is_embedding_or_output_parameter = True
        if self.post_process and self.output_layer.weight is not None:
            self.output_layer.weight.is_embedding_or_output_parameter = True
        if not self.share_embeddings_and_output_weights:
            return
        weight = self.shared_embedding_or_output_weight()
        if weight is None:  # a middle pipeline stage holds neither copy
            return
        if self.pre_process and self.post_process:
            weight.zero_out_wgrad = True
            return
        # first stage: the embedding; last stage: its copy; their grads are summed over `embd`
        weight.shared_embedding = True
        if not self.pre_process:
            weight.shared = True

    def tie_embeddings_and_output_weights_state_dict(self, sharded_state_dict, output_layer_weight_key,
                                                      first_stage_word_emb_key, metadata=None) -> None:
        if not self.post_process or self.pre_process:
            return
        del sharded_state_dict[output_layer_weight_key]
        dp_cp = metadata["dp_cp_group"]
        sharded_state_dict[output_layer_weight_key] = make_tp_sharded_tensor_for_checkpoint(
            tensor=self.shared_embedding_or_output_weight(), key=first_stage_word_emb_key,
            replica_id=(1, 0, dp_cp.rank()), allow_shape_mismatch=True, tp_group=self.tp_group,
            dp_cp_group=dp_cp)
