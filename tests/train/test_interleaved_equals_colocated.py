"""Interleaved (vpp) and zero-bubble schedules train exactly like the colocated model (losses and gradients,
under the strict transport), and checkpoints move between vpp=2 and vpp=1 by global layer index.

One spawn per world size runs every case of that size (process start-up dominates on this machine):
    2 ranks  tiny-lm    language pp2 vpp2: interleaved_1f1b, zero_bubble; checkpoints vpp2 -> vpp1, vpp1 -> vpp2
    4 ranks  tiny-lm-8  language pp4 vpp2: interleaved_1f1b, zero_bubble
             tiny-vlm-8 images pp2 vpp2 -> language pp2 vpp2: interleaved_1f1b (its checkpoint resumes on
                        images vpp1), zero_bubble
    6 ranks  tiny-vlm   images dp2 -> language tp2 pp2: vpp2 interleaved_1f1b, vpp1 zero_bubble (ZB-H1)
"""

import functools
import os
import shutil
import tempfile

import pytest
import torch

from mimo_runtime.launch.spawn import spawn
from mimo_runtime.train.loop import RunConfig, train_rank
from tests.train.equivalence import SEED, STEPS, assert_matches_reference, reference, topology

ENC, LANG = {"kind": "encoder"}, {"kind": "language"}


def _lm(model: str, pp: int, vpp: int, schedule: str):
    return topology(model, {"language": {**LANG, "ranks": pp, "parallel": {"pp": pp, "vpp": vpp}}}, schedule=schedule)


def _vlm(vpp: int, schedule: str):
    return topology("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                                 "language": {**LANG, "ranks": 4, "parallel": {"tp": 2, "pp": 2, "vpp": vpp}}},
                    schedule=schedule)


def _vlm8(images_vpp: int, schedule: str = "interleaved_1f1b"):
    return topology("tiny-vlm-8", {"images": {**ENC, "ranks": 2, "parallel": {"pp": 2, "vpp": images_vpp}},
                                   "language": {**LANG, "ranks": 2, "parallel": {"pp": 2, "vpp": 2}}},
                    schedule=schedule)


EQUIVALENCE = {
    "language_pp2_vpp2_interleaved": (2, _lm("tiny-lm", 2, 2, "interleaved_1f1b")),
    "language_pp2_vpp2_zero_bubble": (2, _lm("tiny-lm", 2, 2, "zero_bubble")),
    "language_pp4_vpp2_interleaved": (4, _lm("tiny-lm-8", 4, 2, "interleaved_1f1b")),
    "language_pp4_vpp2_zero_bubble": (4, _lm("tiny-lm-8", 4, 2, "zero_bubble")),
    "encoder_dp2_to_language_tp2_pp2_vpp2_interleaved": (6, _vlm(2, "interleaved_1f1b")),
    "encoder_dp2_to_language_tp2_pp2_zero_bubble": (6, _vlm(1, "zero_bubble")),
    "encoder_pp2_vpp2_to_language_pp2_vpp2_interleaved": (4, _vlm8(2)),
    "encoder_pp2_vpp2_to_language_pp2_vpp2_zero_bubble": (4, _vlm8(2, "zero_bubble")),
}
VPP1, VPP2 = _lm("tiny-lm", 2, 1, "1f1b"), EQUIVALENCE["language_pp2_vpp2_interleaved"][1]
ENCODER_VPP1 = _vlm8(1)
SAVED = {"language_pp2_vpp2_interleaved": "vpp2", "encoder_pp2_vpp2_to_language_pp2_vpp2_interleaved": "images-vpp2"}


def _config(topo, steps: int = STEPS, **kw) -> RunConfig:
    return RunConfig(steps=steps, seed=SEED, nproc=topo.world_size, timeout_s=30, progress=False,
                     schedule=topo.train.schedule, **kw)


def _cases(rank: int, world_size: int, cases, checkpoints):
    """Every (name, topology, config) in order on this world; between the saving and the resuming runs,
    rank 0 makes the saved directories resume from step 2."""
    import torch.distributed as dist

    out = {}
    for name, topo, cfg in cases:
        if name.startswith("resume") and rank == 0:
            _resume_from_step_2(checkpoints)
        if name.startswith("resume"):
            dist.barrier()
        out[name] = train_rank(rank, world_size, topo, cfg)
    return out


def _resume_from_step_2(checkpoints) -> None:
    for src, dst in checkpoints:
        if not os.path.exists(dst):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("step_00000003"))
            with open(os.path.join(dst, "latest"), "w") as f:
                f.write("step_00000002\n")


@functools.lru_cache(maxsize=None)
def _workdir() -> str:
    return tempfile.mkdtemp(prefix="mimo-vpp-test-")


@functools.lru_cache(maxsize=None)
def _world(size: int):
    """{case: [RankResult per rank]} of every case on `size` ranks, from one spawn."""
    d = _workdir()
    cases = []
    for name, (n, topo) in EQUIVALENCE.items():
        if n == size:
            save = dict(checkpoint_dir=os.path.join(d, SAVED[name]), save_every=2, keep_last=0) \
                if name in SAVED else {}
            cases.append((name, topo, _config(topo, capture_grads_step=0, **save)))
    checkpoints = []
    if size == 2:
        cases.append(("saved_on_vpp1", VPP1, _config(VPP1, checkpoint_dir=os.path.join(d, "vpp1"), save_every=2,
                                                     keep_last=0)))
        checkpoints = [(os.path.join(d, k), os.path.join(d, k + "-at-2")) for k in ("vpp2", "vpp1")]
        cases += [("resume_vpp2_on_vpp1", VPP1, _config(VPP1, checkpoint_dir=checkpoints[0][1], resume=True)),
                  ("resume_vpp1_on_vpp2", VPP2, _config(VPP2, checkpoint_dir=checkpoints[1][1], resume=True))]
    if size == 4:
        checkpoints = [(os.path.join(d, "images-vpp2"), os.path.join(d, "images-vpp2-at-2"))]
        cases.append(("resume_images_vpp2_on_vpp1", ENCODER_VPP1,
                      _config(ENCODER_VPP1, checkpoint_dir=checkpoints[0][1], resume=True)))
    results = spawn(_cases, size, (cases, checkpoints), timeout_s=900, collective_timeout_s=30)
    return {name: [r[name] for r in results] for name, _, _ in cases}


@pytest.mark.parametrize("case", list(EQUIVALENCE))
def test_interleaved_and_zero_bubble_match_colocated(case):
    size, topo = EQUIVALENCE[case]
    assert_matches_reference(topo, _world(size)[case], reference(topo))


@pytest.mark.parametrize("resumed,saved", [("resume_vpp2_on_vpp1", "language_pp2_vpp2_interleaved"),
                                           ("resume_vpp1_on_vpp2", "saved_on_vpp1")])
def test_checkpoint_resumes_across_vpp_by_global_layer(resumed, saved):
    runs = _world(2)
    ref = reference(VPP1)
    assert runs[resumed][0].start_step == 2
    got = [m["loss"] for m in runs[resumed][0].metrics]
    want = [m["loss"] for m in ref.metrics][2:]
    assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=0), (got, want)
    saved_losses = [m["loss"] for m in runs[saved][0].metrics][:2]
    assert saved_losses == pytest.approx([m["loss"] for m in ref.metrics][:2], rel=1e-4)


def test_an_encoder_checkpoint_resumes_across_vpp_by_global_layer():
    """images pp2 vpp2 saved at step 2, resumed with images pp2 vpp1: the colocated run's last loss."""
    run = _world(4)["resume_images_vpp2_on_vpp1"][0]
    want = [m["loss"] for m in reference(ENCODER_VPP1).metrics][2:]
    assert run.start_step == 2
    got = [m["loss"] for m in run.metrics]
    assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=0), (got, want)
