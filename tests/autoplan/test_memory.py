"""The memory model: per-family parameter counts (published totals, and the models this runtime
builds), and per-rank weights, gradients, optimizer state and activations under a plan."""

import pytest

from mimo_runtime.autoplan import Problem, search
from mimo_runtime.autoplan.memory import (
    RankMemory, module_parameters, rank_memory, stage_memory, stage_parameters)
from mimo_runtime.autoplan.search import to_plan
from mimo_runtime.topology import PRESETS
from tests.model.conftest import one_rank_world  # noqa: F401 - built models need a 1-rank gloo world

GIB = 2 ** 30


@pytest.mark.parametrize("preset,module,published", [
    ("llama-3-8b", "language", 8.030e9),  # Meta-Llama-3-8B: 8,030,261,248
    ("llava-1.5-7b", "language", 6.74e9),  # Vicuna-7B (llava-hf's 32064-token vocabulary)
    ("llava-1.5-13b", "language", 13.02e9),  # Vicuna-13B
    ("siglip-qwen2-7b", "language", 7.616e9),  # Qwen2-7B: 7,615,616,512
])
def test_language_parameter_counts_match_the_published_totals(preset, module, published):
    assert module_parameters(PRESETS[preset], module) == pytest.approx(published, rel=2e-3)


def test_clip_vit_l_336_tower_matches_hf_and_the_projector_is_mlp2x_gelu():
    preset = PRESETS["llava-1.5-7b"]
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert module_parameters(preset, "images") - projector == 303_507_456  # HF CLIPVisionModel, ViT-L/14-336


@pytest.fixture(scope="module")
def built():
    from tests.model.fakes import build

    return build


@pytest.mark.parametrize("preset", ["tiny-vlm", "tiny-avlm", "tiny-lm", "tiny-llama", "tiny-llava", "tiny-qwen2-vlm"])
def test_tiny_family_counts_equal_the_models_this_runtime_builds(built, preset):
    from mimo_runtime.model import global_parameters

    params = global_parameters(built(preset))
    dims = PRESETS[preset]
    for name in list(dims.encoders) + ["language"]:
        prefix = "language_model." if name == "language" else f"modality_submodules.{name}."
        held = sum(p.numel() for n, (p, *_) in params.items() if n.startswith(prefix))
        assert module_parameters(dims, name) == held, name


@pytest.mark.parametrize("tp,pp,rank", [(2, 1, 0), (2, 1, 1), (1, 2, 0), (1, 2, 1)])
def test_a_tp_or_pp_rank_holds_the_parameters_the_model_predicts(built, tp, pp, rank):
    """tiny-llama: split matrices, whole norms, the untied output layer on the last stage."""
    from tests.model.fakes import fake_grid

    model = built("tiny-llama", {"language": fake_grid(0, tp=tp, pp=pp)}, rank=rank)
    held = sum(p.numel() for p in model.parameters())
    assert stage_parameters(PRESETS["tiny-llama"], "language", tp, pp, rank // tp)[0] == held


def test_activations_grow_with_the_micro_batch_and_split_over_tp_and_cp():
    preset = PRESETS["llama-3-8b"]
    one = stage_memory(preset, "language", (1, 1, 1, 1), 0, 1, 1)
    assert stage_memory(preset, "language", (1, 1, 1, 1), 0, 2, 1).activations == pytest.approx(2 * one.activations)
    assert stage_memory(preset, "language", (1, 2, 1, 1), 0, 1, 1).activations == pytest.approx(one.activations / 2)
    sp = stage_memory(preset, "language", (2, 1, 1, 1), 0, 1, 1, sequence_parallel=True)
    assert sp.activations == pytest.approx(one.activations / 2)
    assert stage_memory(preset, "language", (2, 1, 1, 1), 0, 1, 1).activations > sp.activations  # norms whole
    assert one.params == 4 * module_parameters(preset, "language") and one.optimizer == 2 * one.params


def test_a_frozen_encoder_keeps_gradients_and_adam_state_for_its_projection_only():
    preset = PRESETS["llava-1.5-7b"]
    frozen = stage_memory(preset, "images", (1, 1, 1, 1), 0, 2, 1, trains="projection")
    trained = stage_memory(preset, "images", (1, 1, 1, 1), 0, 2, 1)
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert frozen.params == trained.params and frozen.grads == 4 * projector
    assert frozen.activations < trained.activations / 10


def test_llava_7b_auto_plan_on_64_ranks_fits_80_gib_per_rank_and_the_planner_agrees():
    p = Problem(PRESETS["llava-1.5-7b"], 64, 512, 2, 80.0)
    best = search(p)
    per_rank = rank_memory(to_plan(p, best.candidate), p.preset)
    assert sorted(per_rank) == list(range(64))
    peak = max(m.total for m in per_rank.values())
    assert peak / GIB <= 80.0 and peak / GIB == pytest.approx(best.peak_gib, rel=1e-6)
    assert all(isinstance(m, RankMemory) and m.params > 0 for m in per_rank.values())


def test_llava_7b_on_too_few_ranks_does_not_fit():
    """16 bytes per trained parameter: 6.7e9 of them need more than 80 GiB on one rank."""
    assert search(Problem(PRESETS["llava-1.5-7b"], 2, 8, 1, 80.0)) is None


def _plan(colocated: bool = False):
    from mimo_runtime.plan import make_plan
    from mimo_runtime.plan.plan import colocated_plan
    from mimo_runtime.topology import topology_from_dict

    topo = topology_from_dict({"model": "tiny-vlm", "train": {"global_batch": 8, "micro_batch": 2},
                               "modules": {"images": {"kind": "encoder", "ranks": 1},
                                           "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2}}}},
                              source="<test>")
    return colocated_plan(topo, 2) if colocated else make_plan(topo)


def test_rank_memory_of_a_topology_counts_each_ranks_own_stage():
    preset = PRESETS["tiny-vlm"]
    mem = rank_memory(_plan(), preset)
    assert mem[0].params == 4 * module_parameters(preset, "images")
    tied_copy = preset.language.vocab_size * preset.language.hidden  # megatron's output copy on the last stage
    assert mem[1].params + mem[2].params == 4 * (module_parameters(preset, "language") + tied_copy)
    # 1F1B with 4 microbatches: the encoder keeps 3 in flight (2 stages downstream), language stage 0 two
    assert mem[0].activations == stage_memory(preset, "images", (1, 1, 1, 1), 0, 2, 3).activations
    assert mem[1].activations == stage_memory(preset, "language", (1, 1, 1, 2), 0, 2, 2).activations


def test_rank_memory_of_a_colocated_plan_holds_every_module_on_every_rank():
    preset = PRESETS["tiny-vlm"]
    mem = rank_memory(_plan(colocated=True), preset)
    every = 4 * (module_parameters(preset, "images") + module_parameters(preset, "language"))
    assert sorted(mem) == [0, 1] and all(m.params == every for m in mem.values())
