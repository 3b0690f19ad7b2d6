"""Initial values depend only on (seed, global name): any rank's slice equals the reference's."""

import pytest
import torch

from mimo_runtime.model import global_parameters, shard_of
from mimo_runtime.model.init import (BASE_STD, HalvesDim, ModuleShard, canonical_name, initial_value, shard_runs,
                                   shard_value)
from tests.model.fakes import build, fake_grid


@pytest.fixture(scope="module")
def reference():
    """{canonical name: full tensor} of the colocated single-process model."""
    return {n: p.detach().clone() for n, (p, *_) in global_parameters(build("tiny-avlm")).items()}


def _assert_slices_of(reference, model):
    params = global_parameters(model)
    assert params, "the rank holds no parameters"
    for name, (param, pdim, tp_rank, tp_size) in params.items():
        assert name in reference, f"{name} is not a parameter of the colocated model"
        torch.testing.assert_close(param.detach(), shard_of(reference[name], pdim, tp_rank, tp_size), rtol=0, atol=0,
                                   msg=lambda m: f"{name}: {m}")
    return params


def test_language_pp2_last_stage_holds_layers_2_and_3_and_the_tied_embedding(reference):
    grids = {"images": fake_grid(0), "audio": fake_grid(1), "language": fake_grid(2, pp=2)}
    model = build("tiny-avlm", grids, rank=3)
    params = _assert_slices_of(reference, model)
    layers = {n.split(".layers.")[1].split(".")[0] for n in params if ".layers." in n}
    assert layers == {"2", "3"}
    # the output layer's tied copy carries the word embedding's name and values
    assert params["language_model.embedding.word_embeddings.weight"][0] is model.language_model.output_layer.weight


def test_encoder_pp2_stage_1_holds_encoder_layer_1_and_the_projection(reference):
    grids = {"images": fake_grid(0, pp=2), "audio": fake_grid(2), "language": fake_grid(3)}
    params = _assert_slices_of(reference, build("tiny-avlm", grids, rank=1))
    assert any(".layers.1." in n for n in params) and not any(".layers.0." in n for n in params)
    assert any("input_projections" in n for n in params)


@pytest.mark.parametrize("rank", [0, 1])
def test_tp2_shards_are_slices_of_the_tp1_tensors(reference, rank):
    grids = {"images": fake_grid(0, tp=2), "audio": fake_grid(0, tp=2), "language": fake_grid(0, tp=2)}
    params = _assert_slices_of(reference, build("tiny-avlm", grids, rank=rank))
    qkv, pdim, tp_rank, tp_size = params["language_model.decoder.layers.0.self_attention.linear_qkv.weight"]
    assert (pdim, tp_rank, tp_size) == (0, rank, 2) and qkv.shape[0] == reference[
        "language_model.decoder.layers.0.self_attention.linear_qkv.weight"].shape[0] // 2


def test_every_parameter_is_initialized_from_its_own_stream(reference):
    a = reference["language_model.decoder.layers.0.self_attention.linear_qkv.weight"]
    b = reference["language_model.decoder.layers.1.self_attention.linear_qkv.weight"]
    assert not torch.equal(a, b)
    assert reference["language_model.decoder.layers.0.input_layernorm.weight"].eq(1).all()
    assert reference["language_model.decoder.layers.0.self_attention.linear_qkv.bias"].eq(0).all()


def test_same_seed_same_values_other_seed_other_values(reference):
    again = {n: p for n, (p, *_) in global_parameters(build("tiny-avlm")).items()}
    for name, full in reference.items():
        assert torch.equal(again[name].detach(), full), name
    w = "language_model.embedding.word_embeddings.weight"
    assert not torch.equal(initial_value(1, w, (64, 64), 4), initial_value(2, w, (64, 64), 4))


def test_canonical_names_use_global_layer_indices():
    stage = ModuleShard(tp_rank=0, tp_size=1, pp_rank=1, pp_size=2, num_layers=4)
    assert canonical_name("language_model.decoder.layers.1.mlp.linear_fc1.weight", stage, True) == \
        "language_model.decoder.layers.3.mlp.linear_fc1.weight"
    assert canonical_name("language_model.output_layer.weight", stage, True) == \
        "language_model.embedding.word_embeddings.weight"
    assert canonical_name("language_model.output_layer.weight", stage, False) == "language_model.output_layer.weight"


def _split_cases():
    """(shape, partition dim, tp) for row, column, inner-dim and gated ([gate; up]) splits."""
    for shape in [(8, 6), (16, 12), (4, 8, 6), (24, 4, 2), (6, 3), (12, 5, 3)]:  # odd runs start mid-word
        for pdim in range(len(shape)):
            for tp in (1, 2, 4):
                if shape[pdim] % tp == 0:
                    yield shape, pdim, tp
                if pdim == 0 and shape[0] % (2 * tp) == 0:
                    yield shape, HalvesDim(0), tp


@pytest.mark.parametrize("shape,pdim,tp", list(_split_cases()))
def test_a_shard_drawn_alone_equals_that_slice_of_the_full_tensor(shape, pdim, tp):
    name = "language_model.decoder.layers.0.mlp.linear_fc1.weight"
    full = initial_value(5, name, shape, 4)
    for rank in range(tp):
        assert torch.equal(shard_value(5, name, shape, 4, pdim, rank, tp), shard_of(full, pdim, rank, tp))


def test_a_shard_draws_only_its_own_elements(monkeypatch):
    from mimo_runtime.model import init

    drawn = []
    words = init._words
    monkeypatch.setattr(init, "_words", lambda key, first, count: drawn.append(count) or words(key, first, count))
    shape = (32000, 64)  # a vocabulary-parallel embedding, tp=8: 1/8 of the words
    shard = shard_value(0, "language_model.embedding.word_embeddings.weight", shape, 4, 0, 3, 8)
    assert shard.shape == (4000, 64) and sum(drawn) == 4000 * 64 // 2  # one word per two elements
    drawn.clear()
    shard_value(0, "language_model.decoder.layers.0.self_attention.linear_proj.weight", (64, 256), 4, 1, 1, 4)
    assert drawn == [32] * 64  # a column split: one run per row


def test_gated_fc1_shard_is_its_slice_of_gate_then_of_up():
    full = torch.arange(8.0).view(8, 1)  # gate rows 0..3, up rows 4..7
    assert shard_of(full, HalvesDim(0), 1, 2).flatten().tolist() == [2.0, 3.0, 6.0, 7.0]
    assert shard_runs((8, 3), HalvesDim(0), 1, 2) == [(6, 6), (18, 6)]


def test_keyed_values_are_standard_normal_times_std():
    w = initial_value(0, "language_model.embedding.word_embeddings.weight", (512, 512), 4)
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() / BASE_STD - 1) < 1e-2
    proj = initial_value(0, "language_model.decoder.layers.0.self_attention.linear_proj.weight", (512, 512), 8)
    assert abs(proj.std().item() / (BASE_STD / 4) - 1) < 1e-2  # megatron's scaled init: 0.02 / sqrt(2 x 8)


@pytest.mark.parametrize("rank", [0, 1])
def test_tp2_gated_model_shards_are_slices_of_the_tp1_tensors(rank):
    """tiny-llama: RMSNorm, SwiGLU fc1 [gate; up], grouped-query qkv, untied output layer."""
    reference = {n: p.detach().clone() for n, (p, *_) in global_parameters(build("tiny-llama")).items()}
    params = _assert_slices_of(reference, build("tiny-llama", {"language": fake_grid(0, tp=2)}, rank=rank))
    fc1, pdim, *_ = params["language_model.decoder.layers.0.mlp.linear_fc1.weight"]
    gate, up = reference["language_model.decoder.layers.0.mlp.linear_fc1.weight"].chunk(2)
    assert isinstance(pdim, HalvesDim)
    assert torch.equal(fc1.detach(), torch.cat([gate.chunk(2)[rank], up.chunk(2)[rank]]))
    assert "language_model.output_layer.weight" in params  # untied: a parameter of its own


def test_runs_longer_than_one_chunk_and_starting_mid_word_match_the_full_tensor(monkeypatch):
    from mimo_runtime.model import init

    name = "language_model.decoder.layers.0.self_attention.linear_proj.weight"
    full = initial_value(9, name, (2, 3, 37), 4)
    monkeypatch.setattr(init, "_CHUNK", 5)  # 10 elements a chunk: every run spans several
    for rank in range(3):  # runs of 37 elements at offsets 0, 37, 74, ...: odd and even starts
        assert torch.equal(shard_value(9, name, (2, 3, 37), 4, 1, rank, 3), shard_of(full, 1, rank, 3))
    assert torch.equal(initial_value(9, name, (2, 3, 37), 4), full)
