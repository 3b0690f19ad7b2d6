"""Interleaved (virtual pipeline) chunks: rank p's chunk c is virtual stage c * pp + p of the colocated model."""

import pytest
import torch

from mimo_runtime.model import global_parameters, shard_of
from mimo_runtime.model.presets import build_mimo_model
from mimo_runtime.train.checkpoint_state import model_tensors
from tests.model.fakes import SEED, fake_grid, fake_pgs

PP, VPP = 4, 2


def _build(rank: int, pp: int = PP, vpp: int = VPP):
    grids = {"language": fake_grid(0, pp=pp)}
    pgs = {"language": fake_pgs((0, 1), (rank, pp))}
    return build_mimo_model("tiny-lm-8", SEED, {"language": (1, pp)}, pgs, grids, rank, vpp=vpp)


@pytest.fixture(scope="module")
def reference():
    return build_mimo_model("tiny-lm-8", SEED, {"language": (1, 1)}, {"language": fake_pgs()})


@pytest.fixture(scope="module")
def ranks():
    return [_build(r) for r in range(PP)]


def _layers(params):
    return {int(n.split(".layers.")[1].split(".")[0]) for n in params if ".layers." in n}


@pytest.mark.parametrize("rank", range(PP))
def test_rank_p_holds_virtual_stages_p_and_pp_plus_p(reference, ranks, rank):
    ref = dict(global_parameters(reference))
    params = global_parameters(ranks[rank])
    assert ranks[rank].num_chunks == VPP
    assert _layers(params) == {rank, PP + rank}
    for name, (param, pdim, tp_rank, tp_size) in params.items():
        torch.testing.assert_close(param.detach(), shard_of(ref[name][0].detach(), pdim, tp_rank, tp_size), rtol=0,
                                   atol=0, msg=lambda m: f"{name}: {m}")
    embedding = "language_model.embedding.word_embeddings.weight"
    assert (embedding in params) == (rank in (0, PP - 1))  # rank 3's last chunk holds the tied output copy
    if rank == PP - 1:
        assert params[embedding][0] is ranks[rank].language_chunk(VPP - 1).output_layer.weight


def test_every_parameter_is_held_by_some_rank(reference, ranks):
    held = set().union(*(global_parameters(m) for m in ranks))
    assert held == set(global_parameters(reference))


def _layout(models):
    """{checkpoint key: (global shape, sorted layer offsets)} over the given ranks' tensors."""
    out = {}
    for m in models:
        for t in model_tensors(m):
            shape, offsets = out.setdefault(t.key, (tuple(t.global_shape), set()))
            assert shape == tuple(t.global_shape), t.key
            offsets.add(tuple(t.global_offset[:getattr(t, "prepend_axis_num", 1)]))
    return {k: (s, sorted(o)) for k, (s, o) in out.items()}


def test_checkpoint_keys_and_layer_offsets_do_not_depend_on_vpp(ranks):
    plain = _layout([_build(r, pp=2, vpp=1) for r in range(2)])
    assert _layout(ranks) == plain
    assert plain["language_model.decoder.layers.mlp.linear_fc1.weight"][1] == [(i,) for i in range(8)]


def test_virtual_stages_in_order_compute_the_colocated_logits(reference, ranks):
    torch.manual_seed(0)
    ids = torch.randint(0, 60, (2, 16))
    pos = torch.arange(16).expand(2, 16)
    want, _ = reference(input_ids=ids, position_ids=pos)
    hidden = None
    for stage in range(PP * VPP):
        model, chunk = ranks[stage % PP], stage // PP
        model.set_input_tensor(None if stage == 0 else {"language": hidden})
        out, _ = model(input_ids=ids, position_ids=pos, chunk=chunk)
        hidden = out if stage == PP * VPP - 1 else out["language"]
    torch.testing.assert_close(hidden, want, rtol=1e-5, atol=1e-6)


ENC_PP = 2
ENC_GRIDS = {"images": fake_grid(0, pp=ENC_PP), "language": fake_grid(ENC_PP)}


def _encoder_rank(rank: int):
    pgs = {"images": fake_pgs((0, 1), (rank, ENC_PP)), "language": fake_pgs()}
    return build_mimo_model("tiny-vlm-8", SEED, {"images": (1, ENC_PP), "language": (1, 1)}, pgs, ENC_GRIDS, rank,
                            encoder_vpp={"images": VPP})


def test_an_interleaved_encoder_is_the_colocated_encoder_in_virtual_stages():
    """images pp2 vpp2: rank p's chunk c holds layer c*pp+p, patchify in the first virtual stage, final norm
    and projection in the last (rank pp-1's chunk V-1); run in order, they give the colocated rows."""
    from mimo_runtime.model.inputs import ENCODER_INPUTS, IMAGE_SHAPE

    reference = build_mimo_model("tiny-vlm-8", SEED, {"images": (1, 1), "language": (1, 1)},
                                 {"images": fake_pgs(), "language": fake_pgs()})
    ranks = [_encoder_rank(r) for r in range(ENC_PP)]
    ref = dict(global_parameters(reference))
    held = set()
    for rank, model in enumerate(ranks):
        chunks = model.encoder_chunks("images")
        assert len(chunks) == VPP
        params = global_parameters(model)
        assert _layers(params) == {rank, ENC_PP + rank}
        for name, (param, pdim, tp_rank, tp_size) in params.items():
            torch.testing.assert_close(param.detach(), shard_of(ref[name][0].detach(), pdim, tp_rank, tp_size),
                                       rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
        held |= set(params)
        for c, sub in enumerate(chunks):
            assert bool(sub.input_projections) == (rank == ENC_PP - 1 and c == VPP - 1)
            assert hasattr(next(iter(sub.encoders.values())), "patch_embed") == (rank == 0 and c == 0)
    assert held == {n for n in ref if n.startswith("modality_submodules.images.")}
    key = ENCODER_INPUTS["images"][0]
    pixels = torch.randn(3, *IMAGE_SHAPE)
    want = reference.modality_submodules["images"](encoder_inputs={key: {"pixels": pixels}})
    hidden = None
    for stage in range(ENC_PP * VPP):
        model, chunk = ranks[stage % ENC_PP], stage // ENC_PP
        model.set_input_tensor(None if stage == 0 else {"images": hidden})
        raw = {"images": {key: {"pixels": pixels}}} if stage == 0 else None
        out, _ = model(input_ids=None, modality_inputs=raw, chunk=chunk)
        hidden = out["images"]
    torch.testing.assert_close(hidden, want, rtol=1e-5, atol=1e-6)


def test_an_interleaved_encoders_checkpoint_keys_do_not_depend_on_vpp():
    def encoder_layout(models):
        return {k: v for k, v in _layout(models).items() if k.startswith("modality_submodules.images.")}

    plain = [build_mimo_model("tiny-vlm-8", SEED, {"images": (1, ENC_PP), "language": (1, 1)},
                              {"images": fake_pgs((0, 1), (r, ENC_PP)), "language": fake_pgs()}, ENC_GRIDS, r)
             for r in range(ENC_PP)]
    want = encoder_layout(plain)
    assert want["modality_submodules.images.encoders.digits_vit.block.layers.mlp.linear_fc1.weight"][1] == \
        [(i,) for i in range(4)]
    assert encoder_layout([_encoder_rank(r) for r in range(ENC_PP)]) == want


def test_a_factory_whose_encoder_config_lacks_the_topologys_vpp_is_one_error():
    from types import SimpleNamespace

    from mimo_runtime.errors import TopologyError
    from mimo_runtime.model.factory import _check_chunks
    from mimo_runtime.plan import make_plan
    from tests.train.equivalence import topology

    topo = topology("tiny-vlm-8", {"images": {"kind": "encoder", "ranks": 2, "parallel": {"pp": 2, "vpp": 2}},
                                 "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2, "vpp": 2}}},
                    schedule="interleaved_1f1b")
    plan = make_plan(topo)
    _check_chunks(_encoder_rank(0), plan)  # the preset asks megatron for the chunks
    one_chunk = SimpleNamespace(role=SimpleNamespace(modules={"images": None}), encoder_chunks=lambda name: [None])
    with pytest.raises(TopologyError, match=r"^<test>: model: .* returned the 'images' encoder's TransformerConfig with "
                                            r"virtual_pipeline_model_parallel_size=None, but modules\.images\.parallel"
                                            r"\.vpp is 2; set it to 2"):
        _check_chunks(one_chunk, plan)
