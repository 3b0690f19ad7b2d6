"""Training controls on real processes: per-module optimizers and lr schedules, freeze patterns, an
encoder frozen entirely, and a pretrained encoder loaded into a heterogeneous topology.

One 4-rank run (images tp2 on ranks 0-1, audio on rank 2, language on rank 3) and its colocated
single-process reference; every test reads the same two runs.
"""

import math

import pytest
import torch

from mimo_runtime.launch.spawn import spawn
from mimo_runtime.train.loop import RankResult, RunConfig
from tests.optim.rank_fns import controls_rank
from tests.train.equivalence import assert_matches_reference, shard_of, topology

STEPS = 4
IMAGES_FROZEN = ("encoders.*.layers.0.*", "encoders.*.patch_embed.*")


def controls_topology(pretrained: str):
    return topology("tiny-avlm", {
        "images": {"kind": "encoder", "ranks": 2, "parallel": {"tp": 2}, "freeze": list(IMAGES_FROZEN),
                   "pretrained": {"path": pretrained},
                   "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "lr_schedule": "warmup_cosine",
                                 "warmup_steps": 2, "decay_steps": 4, "min_lr": 0.005}},
        "audio": {"kind": "encoder", "frozen": True, "freeze": ["input_projections.*"]},
        "language": {"kind": "language", "optimizer": {"lr_schedule": "warmup_linear", "warmup_steps": 1}},
    }, steps=STEPS, lr=1.0e-3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    path = str(tmp_path_factory.mktemp("pretrained") / "whole_model.pt")
    topo = controls_topology(path)
    cfg = RunConfig(steps=STEPS, seed=7, timeout_s=30, progress=False)
    ref = spawn(controls_rank, 1, args=(topo, RunConfig(**{**vars(cfg), "colocated": True}), path),
                timeout_s=240, collective_timeout_s=30)[0]
    hetero = spawn(controls_rank, topo.world_size, args=(topo, RunConfig(**{**vars(cfg), "nproc": 4})),
                   timeout_s=240, collective_timeout_s=30)
    return topo, torch.load(path), ref, hetero


# the formulas of docs/training.md, written out: images sgd warmup_cosine (lr .05, 2 warm-up steps,
# decay to .005 at step 4); language adamw warmup_linear (train.lr 1e-3, 1 warm-up step, to 0 at train.steps=4)
IMAGES_LR = [0.025, 0.05, 0.05, 0.005 + 0.045 * 0.5 * (1 + math.cos(math.pi / 2))]
LANGUAGE_LR = [1e-3, 1e-3, 1e-3 * 2 / 3, 1e-3 / 3]


def test_each_param_group_follows_its_modules_lr_formula_on_every_rank(runs):
    _, _, ref, hetero = runs
    for who, res in [("reference", ref)] + [(f"rank {r}", res) for r, res in enumerate(hetero)]:
        for step, lrs in enumerate(res["lrs"]):
            for module, want in (("images", IMAGES_LR), ("language", LANGUAGE_LR)):
                if module in lrs:
                    assert len(lrs[module]) == 2, f"{who}: {module} needs a decay and a no-decay group"
                    assert lrs[module] == pytest.approx([want[step]] * 2), (who, module, step)
    assert set(hetero[0]["lrs"][0]) == {"images"} and set(hetero[3]["lrs"][0]) == {"language"}
    assert [m["lr.images"] for m in hetero[3]["metrics"]] == pytest.approx(IMAGES_LR)


def test_frozen_parameters_are_unchanged_have_no_grad_and_no_optimizer_state(runs):
    _, _, _, hetero = runs
    for rank in (0, 1):
        res = hetero[rank]
        frozen = [n for n, rg in res["requires_grad"].items() if not rg]
        trained = [n for n, rg in res["requires_grad"].items() if rg]
        assert any(".layers.0." in n for n in frozen) and any("patch_embed" in n for n in frozen)
        assert all(".layers.0." in n or "patch_embed" in n for n in frozen), frozen
        assert any(".layers.1." in n for n in trained) and any("input_projections" in n for n in trained)
        for n in frozen:
            assert torch.equal(res["final"][n][0], res["initial"][n][0]), f"rank {rank}: frozen {n} changed"
            assert res["grads"][n][0] is None and n not in res["in_groups"] and n not in res["state"]
        for n in trained:
            assert not torch.equal(res["final"][n][0], res["initial"][n][0]), f"rank {rank}: {n} did not train"
            assert res["state"][n] == ["momentum_buffer"]


def test_an_encoder_frozen_entirely_runs_no_backward_and_exchanges_no_gradients(runs):
    _, _, ref, hetero = runs
    assert all(res["frozen_all"] == ["audio"] for res in hetero + [ref])
    audio = hetero[2]
    assert not audio["lrs"][0], "a frozen encoder gets no optimizer"
    assert not any(kind in ("B", "RECV_B", "REDUCE_GRADS") for kind, _ in audio["actions"]), audio["actions"]
    assert audio["comm"]["payload_recv"] == 0
    assert not any(kind == "SEND_B" and peer == "audio" for kind, peer in hetero[3]["actions"])
    assert any(kind == "SEND_B" and peer == "images" for kind, peer in hetero[3]["actions"])
    for n, (value, *_rest) in audio["final"].items():
        assert torch.equal(value, audio["initial"][n][0]) and audio["grads"][n][0] is None, n


def test_pretrained_encoder_is_resharded_into_tp2_and_only_the_encoder_is_loaded(runs):
    _, stored, _, hetero = runs
    for rank in (0, 1):
        for n, (value, dim, tp_rank, tp_size) in hetero[rank]["initial"].items():
            assert torch.equal(value, shard_of(stored[n], dim, tp_rank, tp_size)), f"rank {rank}: {n}"
    for rank in (2, 3):  # audio and language keep their own (seeded) init: the file is a whole model
        drawn = [n for n in hetero[rank]["initial"] if stored[n].std() > 0]  # not the constant biases/norms
        assert drawn and all(not torch.equal(hetero[rank]["initial"][n][0], stored[n]) for n in drawn)


def test_pretrained_encoder_in_heterogeneous_topology_matches_the_colocated_model(runs):
    topo, _, ref, hetero = runs
    assert_matches_reference(topo, [RankResult(metrics=r["metrics"], grads=r["grads"]) for r in hetero],
                             RankResult(metrics=ref["metrics"], grads=ref["grads"]))
    # and the encoder after 4 SGD steps on its own schedule (language's Adam divides by sqrt(v):
    # where a gradient is ~0, float rounding moves single updates by up to lr, so it is left to the losses)
    for rank in (0, 1):
        for n, (value, dim, tp_rank, tp_size) in hetero[rank]["final"].items():
            torch.testing.assert_close(value, shard_of(ref["final"][n][0], dim, tp_rank, tp_size),
                                       rtol=1e-4, atol=1e-6, msg=lambda m: f"rank {rank} {n}: {m}")
