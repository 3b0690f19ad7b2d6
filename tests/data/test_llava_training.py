"""LLaVA records on disk train every topology like the colocated single-process run (DESIGN "Semantics")."""

import dataclasses
import json
import os

import pytest

from mimo_runtime.data.balance import BalancedOrder
from mimo_runtime.data.llava import index_topology
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.loop import RunConfig
from mimo_runtime.train.sampler import Sampler

from tests.data.llava_files import write_dataset
from tests.data.rank_fns import train_runs
from tests.train.equivalence import STEPS, assert_matches_reference, run

ENC, LANG = {"kind": "encoder"}, {"kind": "language"}
SHAPES = {
    "encoder_dp2_to_language_tp2": {"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                                    "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}},
    "encoder_pp2_to_language_tp2": {"images": {**ENC, "ranks": 2, "parallel": {"pp": 2}},
                                    "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}},
}


def topology(files, modules, **data):
    return topology_from_dict({"model": "tiny-vlm", "modules": modules, "data": {"format": "llava", **files, **data},
                               "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}}, source="<test>")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 4-rank launch for every scenario, and the colocated reference (0, 1 and 2 images per sample;
    seq_length 16 truncates the longest samples)."""
    root = tmp_path_factory.mktemp("llava")
    files = write_dataset(str(root), n=24)
    scenarios = {"dp2_tp2": topology(files, SHAPES["encoder_dp2_to_language_tp2"], seq_length=16),
                 "dp2_tp2_packed": topology(files, SHAPES["encoder_dp2_to_language_tp2"], seq_length=16,
                                            packing=True),
                 "pp2_tp2": topology(files, SHAPES["encoder_pp2_to_language_tp2"], seq_length=16),
                 "dp2_tp2_balanced": topology(files, SHAPES["encoder_dp2_to_language_tp2"], seq_length=16,
                                              balance=True)}
    index_topology(scenarios["dp2_tp2"])  # what the launcher does before starting ranks
    cfg = RunConfig(steps=STEPS, seed=7, nproc=4, timeout_s=30, progress=False, capture_grads_step=0)
    ckpt = dict(checkpoint_dir=str(root / "ckpt"), keep_last=0)
    whole = dataclasses.replace(cfg, save_every=STEPS - 1, **ckpt)  # saves after step k = STEPS - 1, and the last
    resumed = dataclasses.replace(cfg, resume=True, capture_grads_step=None, **ckpt)
    runs = [(scenarios["dp2_tp2"], whole), (scenarios["dp2_tp2_packed"], cfg), (scenarios["pp2_tp2"], cfg),
            (scenarios["dp2_tp2_balanced"], cfg), (scenarios["dp2_tp2"], resumed, f"step_{STEPS - 1:08d}")]
    results = spawn(train_runs, 4, args=(runs,), timeout_s=400, collective_timeout_s=30)
    names = list(scenarios) + ["resumed"]
    by_name = {name: [rank_runs[k] for rank_runs in results] for k, name in enumerate(names)}
    reference = run(scenarios["dp2_tp2"], colocated=True, nproc=1)[0]
    return scenarios, by_name, reference


@pytest.mark.parametrize("name", ["dp2_tp2", "dp2_tp2_packed", "pp2_tp2", "dp2_tp2_balanced"])
def test_llava_data_on_a_heterogeneous_topology_matches_colocated(runs, name):
    scenarios, by_name, reference = runs
    assert_matches_reference(scenarios[name], [r for r, _ in by_name[name]], reference)


def test_balanced_batches_reorder_the_step_over_the_encoder_replicas(runs):
    """The balanced run above matches the unbalanced reference; here: it did train on another order."""
    scenarios, _, _ = runs
    index = index_topology(scenarios["dp2_tp2"])["train"]
    plain = Sampler(len(index.entries), 8, 2, 7)
    cost = lambda i: (len(index.entries[i].images) * 4, min(index.entries[i].length, 16))  # noqa: E731
    hook = BalancedOrder(cost, 4, 2)
    steps = [plain.step_samples(s) for s in range(STEPS)]
    assert all(sorted(hook(s)) == sorted(s) for s in steps) and any(hook(s) != s for s in steps)


def test_encoder_ranks_decode_only_their_images_and_language_ranks_only_tokenize(runs):
    scenarios, by_name, _ = runs
    reads = [r for _, r in by_name["dp2_tp2"]]
    index = index_topology(scenarios["dp2_tp2"])["train"]
    sampler = Sampler(len(index.entries), 8, 2, 7)
    images = sum(len(index.entries[i].images) for s in range(STEPS) for i in sampler.step_samples(s))
    enc, lang = reads[:2], reads[2:]
    assert all(r.get("records", 0) == 0 for r in enc), reads
    assert all(r.get("images", 0) == 0 for r in lang), reads
    assert sum(r["images"] for r in enc) == images  # each image decoded once, by the replica that owns it
    assert all(r["records"] == 8 * STEPS for r in lang)  # both TP ranks need their replica's tokens


def test_metrics_count_truncated_samples_and_data_wait(runs):
    scenarios, by_name, _ = runs
    index = index_topology(scenarios["dp2_tp2"])["train"]
    sampler = Sampler(len(index.entries), 8, 2, 7)
    want = [sum(index.entries[i].length > 16 for i in sampler.step_samples(s)) for s in range(STEPS)]
    rows = by_name["dp2_tp2"][0][0].metrics
    assert [m["data_truncated"] for m in rows] == want and sum(want) > 0
    assert all(m["data_skipped"] == 0 and m["data_wait_s"] > 0 for m in rows)


def test_resume_after_k_steps_equals_the_uninterrupted_run_bit_for_bit(runs):
    _, by_name, _ = runs
    whole = by_name["dp2_tp2"][0][0].metrics
    resumed = by_name["resumed"][0][0]
    assert resumed.start_step == STEPS - 1
    with open(os.path.join(by_name["dp2_tp2"][0][0].checkpoints[0], "mimo.json")) as f:
        assert json.load(f)["data"] == {"samples_seen": 8 * (STEPS - 1), "dataset_len": 24}
