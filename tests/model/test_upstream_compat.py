"""Our own specification of each upstream-compatibility behaviour (issue 16), one test each."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model import (MIMO_LANGUAGE_MODULE_KEY, MimoModelConfig, ModalitySubmodules, ModuleLayout,
                                ModuleStageInfo, RankRole, VisionModalitySubmodules)
from mimo_runtime.model.submodules import takes_stage_kwargs
from tests.model.fakes import FakeGroup, H_LM, build

LANG = MIMO_LANGUAGE_MODULE_KEY


def grid(rank_offset, size, pp=None):
    """A grid-like object with only what upstream reads: no `shape`."""
    g = SimpleNamespace(rank_offset=rank_offset, size=size, dim_names=["pp"] if pp else [])
    g.get_pg = lambda dims: FakeGroup(*pp) if dims == "pp" else None
    return g


def test_rank_role_defaults_to_colocated_with_no_modules():
    assert RankRole().mode is ModuleLayout.COLOCATED and RankRole().modules == {}
    assert RankRole(modules={"images": ModuleStageInfo(True, True)}).mode is ModuleLayout.COLOCATED


def test_rank_role_build_reads_the_pp_stage_from_a_grid_without_shape():
    role = RankRole.build(["images"], {"images": grid(0, 4, pp=(1, 3)), LANG: grid(4, 4)}, rank=2)
    assert role == RankRole({"images": ModuleStageInfo(False, False)}, ModuleLayout.NON_COLOCATED)


def test_rank_role_build_with_grids_on_the_same_ranks_is_colocated():
    role = RankRole.build(["images"], {"images": grid(0, 2), LANG: grid(0, 2)}, rank=1)
    assert role.mode is ModuleLayout.COLOCATED and set(role.modules) == {"images", LANG}


def test_rank_role_build_rejects_a_rank_outside_every_grid():
    with pytest.raises(RuntimeError, match="Rank 9 is not in any module grid"):
        RankRole.build(["images"], {"images": grid(0, 2), LANG: grid(2, 2)}, rank=9)


def test_config_names_missing_and_extra_grid_map_keys():
    with pytest.raises(ValueError, match=r"module_to_grid_map keys must match modality module names \+ 'language'\. "
                                         r"Missing: \['images'\], Extra: \['video'\]"):
        MimoModelConfig(modality_submodules_spec={"images": None}, special_token_ids={"images": 3},
                        module_to_grid_map={LANG: grid(0, 1), "video": grid(0, 1)})


class Const(nn.Module):
    def __init__(self, value, shape, wrap=None):
        super().__init__()
        self.value, self.shape, self.wrap = value, shape, wrap

    def forward(self, n):
        out = torch.full((n, *self.shape), float(self.value))
        if self.wrap == "tuple":
            return out, torch.zeros(1)
        if self.wrap == "hf":
            return SimpleNamespace(last_hidden_state=out)
        return out


def test_encode_flattens_each_encoder_and_keeps_encoder_order():
    sub = VisionModalitySubmodules(encoders={"a": Const(1, (3, 4)), "b": Const(2, (4,)), "c": Const(3, (2, 4), "hf")})
    a, b, c = sub.encode({"a": {"n": 2}, "b": {"n": 5}, "c": {"n": 1}})
    assert (a.shape, b.shape, c.shape) == ((6, 4), (5, 4), (2, 4))
    assert sub({"a": {"n": 2}, "b": {"n": 5}, "c": {"n": 1}}).tolist() == [[1.0] * 4] * 6 + [[2.0] * 4] * 5 + \
        [[3.0] * 4] * 2


def test_encode_takes_the_first_element_of_a_tuple_output():
    sub = VisionModalitySubmodules(encoders={"a": Const(7, (2, 4), "tuple")})
    assert sub.encode({"a": {"n": 3}})[0].shape == (6, 4)


@pytest.mark.parametrize("data", [None, {}])
def test_forward_without_data_is_none(data):
    assert VisionModalitySubmodules(encoders={"a": Const(1, (2, 4))})(data) is None


def test_encoder_rejects_outputs_that_are_not_rows_or_batches():
    with pytest.raises(ValueError, match=r"Encoder 'a' output shape \(2, 1, 1, 4\) is not supported"):
        VisionModalitySubmodules(encoders={"a": Const(1, (1, 1, 4))}).encode({"a": {"n": 2}})


class Staged(nn.Module):
    def __init__(self, pre_process=True, post_process=True):
        super().__init__()
        self.stage = (pre_process, post_process)


def test_stage_keywords_reach_only_encoders_whose_constructor_takes_them():
    spec = ModuleSpec(module=VisionModalitySubmodules, submodules={"encoders": {
        "staged": ModuleSpec(module=Staged), "plain": ModuleSpec(module=nn.Identity)}})
    sub = VisionModalitySubmodules.from_spec(spec, is_first_stage=True, is_last_stage=True)
    assert sub.encoders["staged"].stage == (True, True) and isinstance(sub.encoders["plain"], nn.Identity)
    assert takes_stage_kwargs(Staged) and not takes_stage_kwargs(nn.Linear)
    staged = ModuleSpec(module=VisionModalitySubmodules, submodules={
        "encoders": {"staged": ModuleSpec(module=Staged)},
        "input_projections": [ModuleSpec(module=nn.Linear, params={"in_features": 2, "out_features": 2})]})
    first = VisionModalitySubmodules.from_spec(staged, is_first_stage=True, is_last_stage=False)
    assert first.encoders["staged"].stage == (True, False) and len(first.input_projections) == 0
    assert not first.is_last_stage


def test_modality_submodules_is_our_base_with_upstreams_encode():
    assert issubclass(VisionModalitySubmodules, ModalitySubmodules)
    assert ModalitySubmodules.encode(VisionModalitySubmodules(encoders={"a": Const(1, (2, 4))}),
                                     {"a": {"n": 1}})[0].shape == (2, 4)


def test_text_only_batch_gives_every_modality_zero_rows_on_encoder_ranks():
    grids = {"images": SimpleNamespace(rank_offset=0, shape=(1, 1, 1, 1), dim_names=("tp", "cp", "dp", "pp")),
             "audio": SimpleNamespace(rank_offset=0, shape=(1, 1, 1, 1), dim_names=("tp", "cp", "dp", "pp")),
             LANG: SimpleNamespace(rank_offset=1, shape=(1, 1, 1, 1), dim_names=("tp", "cp", "dp", "pp"))}
    model = build("tiny-avlm", grids, rank=0)
    out, _ = model(input_ids=None, modality_inputs=None)
    assert {n: tuple(t.shape) for n, t in out.items()} == {"images": (0, H_LM), "audio": (0, H_LM)}


def test_position_ids_reach_the_language_model_and_3d_ids_embed_like_their_first_channel():
    model = build("tiny-vlm").eval()
    seen = {}
    lm_forward = model.language_model.forward

    def spy(**kwargs):
        seen.update(kwargs)
        return lm_forward(**kwargs)

    model.language_model.forward = spy
    ids = torch.full((2, 16), 9)
    pos = torch.arange(16).expand(2, 16)
    out_2d, _ = model(input_ids=ids, position_ids=pos)
    assert seen["position_ids"] is pos and seen["input_ids"] is None
    pos_3d = torch.stack([pos, pos + 1, pos + 2])
    torch.testing.assert_close(model.get_text_embeddings(ids, pos_3d, model.special_token_ids),
                               model.get_text_embeddings(ids, pos, model.special_token_ids))
