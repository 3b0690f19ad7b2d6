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


def test_interleaved_encoders_are_refused_with_the_field_named():
    from mimo_runtime.errors import TopologyError
    from mimo_runtime.model.factory import _check_chunked_modules
    from mimo_runtime.plan import make_plan
    from tests.train.equivalence import topology

    topo = topology("tiny-vlm-8", {"images": {"kind": "encoder", "ranks": 2, "parallel": {"pp": 2, "vpp": 2}},
                                 "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2, "vpp": 2}}},
                    schedule="interleaved_1f1b")
    with pytest.raises(TopologyError, match=r"modules\.images\.parallel\.vpp: 2: interleaved chunks run on the "
                                            r"language module only"):
        _check_chunked_modules(make_plan(topo))
