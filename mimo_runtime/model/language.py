"""The language model: megatron's GPTModel minus its parallel_state and CUDA assumptions.

Three pieces need replacing on CPU with explicit groups:
- `RotaryEmbedding.get_emb` moves its frequencies to CUDA on first use; `PortableRotaryEmbedding`
  keeps them on the model's device.
- `setup_embeddings_and_output_layer` moves the tied output weight to CUDA and all-reduces it
  over the embedding group to copy the first stage's values; our keyed initialization already
  gives both copies the same values, so only the bookkeeping attributes are set.
- `tie_embeddings_and_output_weights_state_dict` reads parallel_state's DP rank for the replica
  id of the last stage's copy; we read it from the dp_cp group in the metadata instead.
Loss is never computed here (its vocab_parallel_cross_entropy reads parallel_state's TP group);
see `mimo_runtime.model.loss`.
"""

import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.utils import make_tp_sharded_tensor_for_checkpoint


class PortableRotaryEmbedding(RotaryEmbedding):
    """RotaryEmbedding whose frequencies stay on the device they were created on."""

    def get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
        freqs = self.get_freqs_non_repeated(max_seq_len, offset)
        if self.rotary_interleaved:
            emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
        else:
            emb = torch.cat((freqs, freqs), dim=-1)
        return emb[:, None, None, :]


class LanguageModel(GPTModel):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(getattr(self, "rotary_pos_emb", None)) is RotaryEmbedding:
            # same state, portable get_emb (GPTModel builds the rotary module inline)
            self.rotary_pos_emb.__class__ = PortableRotaryEmbedding

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
