"""The seed API's methods: documented shapes and semantics (colocated model, tp=pp=1)."""

import pytest
import torch
import torch.nn.functional as F

from megatron.core.transformer.enums import AttnMaskType

from mimo_runtime.model import MimoModel, MimoModelConfig, SDPAttention, layer_spec
from mimo_runtime.model.mimo import _packed_seq_params
from tests.model.fakes import H_LM as H
from tests.model.fakes import S, T_AUD, T_IMG, V, batch, build, checkpoint_layout, dataset, fake_grid, indices

IMG, AUD = 3, 4


@pytest.fixture(scope="module")
def model() -> MimoModel:
    return build("tiny-avlm")


def test_get_text_embeddings_are_the_word_embeddings_of_text_tokens_in_row_major_order(model):
    ids = torch.tensor([[1, IMG, IMG, 20, 21], [1, 22, AUD, 23, 0]])
    pos = torch.arange(5).expand(2, 5)
    emb = model.get_text_embeddings(ids, pos, model.special_token_ids)
    text = [(b, s) for b in range(2) for s in range(5) if ids[b, s] not in (IMG, AUD)]
    assert emb.shape == (len(text), H)
    words = model.language_model.embedding.word_embeddings.weight
    for row, (b, s) in enumerate(text):
        torch.testing.assert_close(emb[row], words[ids[b, s]])  # RoPE: positions live in attention


def test_align_places_rows_in_sample_order_and_returns_sbh(model):
    ids = torch.tensor([[1, IMG, 30, IMG, AUD], [IMG, 31, AUD, AUD, 32]])
    n_text, n_img, n_aud = 4, 3, 3
    text = torch.arange(n_text, dtype=torch.float).repeat_interleave(H).reshape(n_text, H)
    img = 100 + torch.arange(n_img, dtype=torch.float).repeat_interleave(H).reshape(n_img, H)
    aud = 200 + torch.arange(n_aud, dtype=torch.float).repeat_interleave(H).reshape(n_aud, H)
    out = model.align_embeddings_by_token_positions({"text": text, "images": img, "audio": aud}, ids,
                                                    model.special_token_ids)
    assert out.shape == (5, 2, H)  # (S, B, H)
    expected = torch.tensor([[0, 100, 1, 101, 200], [102, 2, 201, 202, 3]], dtype=torch.float)
    torch.testing.assert_close(out[:, :, 0], expected.t())


def test_align_accepts_unbatched_input_ids(model):
    ids = torch.tensor([1, IMG, 30])
    out = model.align_embeddings_by_token_positions(
        {"text": torch.ones(2, H), "images": torch.zeros(1, H)}, ids, model.special_token_ids)
    assert out.shape == (3, 1, H)


def test_colocated_forward_returns_logits_and_passes_loss_mask_through(model):
    tokens, inputs = batch("tiny-avlm", indices("tiny-avlm", 3))
    logits, loss_mask = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], None, inputs)
    assert logits.shape == (3, S, V) and loss_mask is tokens["loss_mask"]
    per_token, _ = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], tokens["labels"],
                         inputs)
    expected = F.cross_entropy(logits.reshape(-1, V), tokens["labels"].reshape(-1), reduction="none")
    torch.testing.assert_close(per_token, expected.reshape(3, S), atol=1e-5, rtol=1e-5)


def test_padding_attention_mask_leaves_real_tokens_unchanged_when_right_padded(model):
    tokens, inputs = batch("tiny-avlm", indices("tiny-avlm", 2))
    keep = (tokens["input_ids"] != 0).long()
    plain, _ = model(tokens["input_ids"], tokens["position_ids"], None, None, None, inputs)
    masked, _ = model(tokens["input_ids"], tokens["position_ids"], keep, None, None, inputs)
    real = keep.bool()
    torch.testing.assert_close(masked[real], plain[real], atol=1e-5, rtol=1e-5)


def _packed(tokens, idx):
    """Each sample's real tokens (up to its EOS) back to back: input_ids (1, T) + cu_seqlens."""
    lengths = [int((tokens["input_ids"][b] != 0).sum()) for b in range(len(idx))]
    cat = {k: torch.cat([tokens[k][b, :n] for b, n in enumerate(lengths)])[None] for k in tokens}
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    return cat, {"cu_seqlens_q": cu, "cu_seqlens_kv": cu, "max_seqlen_q": max(lengths),
                 "max_seqlen_kv": max(lengths)}, cu


def test_packed_thd_gives_the_same_per_sample_loss_as_padded(model):
    idx = indices("tiny-avlm", 3)
    tokens, inputs = batch("tiny-avlm", idx)
    padded, _ = model(tokens["input_ids"], tokens["position_ids"], None, None, tokens["labels"], inputs)
    padded = (padded * tokens["loss_mask"]).sum(1)
    cat, kwargs, cu = _packed(tokens, idx)
    packed, _ = model(cat["input_ids"], cat["position_ids"], None, None, cat["labels"], inputs, packing_kwargs=kwargs)
    per_token = (packed * cat["loss_mask"])[0]
    packed = torch.stack([per_token[cu[i]:cu[i + 1]].sum() for i in range(len(idx))])
    torch.testing.assert_close(packed, padded, atol=1e-4, rtol=1e-5)


def test_mimo_config_validates_kv_format_and_special_ids():
    with pytest.raises(ValueError, match="kv_format"):
        MimoModelConfig(kv_format="bad")
    with pytest.raises(ValueError, match="images"):
        MimoModelConfig(modality_submodules_spec={"images": None}, special_token_ids={})


def test_sharded_state_dict_keys_do_not_depend_on_the_topology():
    reference = checkpoint_layout([build("tiny-vlm")])
    pipelined = {"images": fake_grid(0, pp=2), "language": fake_grid(2, pp=2)}
    split = checkpoint_layout([build("tiny-vlm", pipelined, rank=r) for r in range(4)])
    tensor_parallel = {"images": fake_grid(0, tp=2), "language": fake_grid(2, tp=2, pp=2)}
    sharded = checkpoint_layout([build("tiny-vlm", tensor_parallel, rank=r) for r in range(6)])
    assert split == reference
    assert sharded == reference
    qkv = reference["language_model.decoder.layers.self_attention.linear_qkv.weight"]
    assert qkv == ((4, 3 * H, H), [(0,), (1,), (2,), (3,)])  # global layer axis, every layer present


def test_dataset_rows_match_special_tokens():
    ds = dataset("tiny-avlm")
    for i in range(20):
        ids = ds.tokens(i)["input_ids"]
        assert int((ids == IMG).sum()) == T_IMG * ds.num_items(i, "images")
        assert int((ids == AUD).sum()) == T_AUD * ds.num_items(i, "audio")


def test_packing_kwargs_become_thd_packed_seq_params():
    p = _packed_seq_params({"cu_seqlens_q": [0, 3, 10], "max_seqlen_q": 10})
    assert p.qkv_format == "thd" and p.cu_seqlens_q.dtype == torch.int32
    assert torch.equal(p.cu_seqlens_kv, p.cu_seqlens_q)
    assert (p.max_seqlen_q, p.max_seqlen_kv) == (7, 7)  # from the boundaries, not the caller's total
    assert _packed_seq_params(None) is None


def test_cpu_layer_specs_use_portable_attention():
    causal, bidirectional = layer_spec(causal=True), layer_spec(causal=False)
    assert causal.submodules.self_attention.submodules.core_attention is SDPAttention
    assert causal.submodules.self_attention.params["attn_mask_type"] == AttnMaskType.causal
    assert bidirectional.submodules.self_attention.params["attn_mask_type"] == AttnMaskType.no_mask
    with pytest.raises(ValueError, match="backend"):
        layer_spec(causal=True, backend="cuda")
