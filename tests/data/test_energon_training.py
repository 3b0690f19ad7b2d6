"""An energon dataset trains a heterogeneous topology like the colocated single-process run, and resumes
exactly (DESIGN "Semantics"; docs/data.md "format: energon")."""

import dataclasses
import json
import os

import pytest

from mimo_runtime.data.sources import index_data
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.loop import RunConfig
from mimo_runtime.train.sampler import Sampler

from tests.data.energon_files import write_energon_dataset
from tests.data.rank_fns import train_runs
from tests.data.test_llava_training import SHAPES
from tests.train.equivalence import STEPS, assert_matches_reference, run


def topology(data):
    return topology_from_dict({"model": "tiny-vlm", "modules": SHAPES["encoder_dp2_to_language_tp2"],
                               "data": {**data, "seq_length": 16},
                               "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}}, source="<test>")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 4-rank launch (encoder dp2 -> language tp2): a run saving after step k = STEPS - 1, the same run
    resumed from that checkpoint, and a blend of the energon dataset with LLaVA records; and the colocated
    references. 0, 1 and 2 images per sample, seq_length 16 truncates the longest."""
    root = tmp_path_factory.mktemp("energon")
    files = write_energon_dataset(str(root), n=20)
    topo = topology({"format": "energon", "path": files["energon"], "tokenizer": files["tokenizer"]})
    blend = topology({"blend": [{"weight": 1, "format": "energon", "path": files["energon"]},
                                {"weight": 3, "format": "llava", "path": files["path"],
                                 "image_root": files["image_root"]}], "tokenizer": files["tokenizer"]})
    index_data(topo), index_data(blend)  # what the launcher does before starting ranks
    cfg = RunConfig(steps=STEPS, seed=7, nproc=4, timeout_s=30, progress=False, capture_grads_step=0)
    ckpt = dict(checkpoint_dir=str(root / "ckpt"), keep_last=0)
    whole = dataclasses.replace(cfg, save_every=STEPS - 1, **ckpt)
    resumed = dataclasses.replace(cfg, resume=True, capture_grads_step=None, **ckpt)
    results = spawn(train_runs, 4, args=([(topo, whole), (topo, resumed, f"step_{STEPS - 1:08d}"), (blend, cfg)],),
                    timeout_s=300, collective_timeout_s=30)
    references = {"energon": run(topo, colocated=True, nproc=1)[0], "blend": run(blend, colocated=True, nproc=1)[0]}
    return {"energon": topo, "blend": blend}, [r[0] for r in results], [r[1] for r in results], \
        [r[2] for r in results], references


def test_energon_data_on_a_heterogeneous_topology_matches_colocated(runs):
    topos, whole, _, _, references = runs
    reference = references["energon"]
    assert_matches_reference(topos["energon"], [r for r, _ in whole], reference)
    assert [m["data_truncated"] for m in whole[0][0].metrics] == [m["data_truncated"] for m in reference.metrics]
    assert sum(m["data_truncated"] for m in reference.metrics) > 0


def test_a_blend_of_energon_and_llava_data_on_a_heterogeneous_topology_matches_colocated(runs):
    topos, _, _, blend, references = runs
    assert_matches_reference(topos["blend"], [r for r, _ in blend], references["blend"])
    assert [m["loss"] for m in references["blend"].metrics] != [m["loss"] for m in references["energon"].metrics]


def test_encoder_ranks_decode_only_their_images_and_language_ranks_only_their_text(runs):
    topos, whole, _, _, _ = runs
    reads = [r for _, r in whole]
    index = index_data(topos["energon"])[0]
    sampler = Sampler(len(index.entries), 8, 2, 7)
    images = sum(len(index.entries[i].images) for s in range(STEPS) for i in sampler.step_samples(s))
    enc, lang = reads[:2], reads[2:]
    assert all(r.get("records", 0) == 0 for r in enc), reads
    assert all(r.get("images", 0) == 0 for r in lang), reads
    assert sum(r["images"] for r in enc) == images > 0
    assert all(r["records"] == 8 * STEPS for r in lang)


def test_resume_after_k_steps_equals_the_uninterrupted_run_bit_for_bit(runs):
    _, whole, resumed, _, _ = runs
    full, again = whole[0][0], resumed[0][0]
    assert again.start_step == STEPS - 1
    assert [m["loss"] for m in again.metrics] == [m["loss"] for m in full.metrics][STEPS - 1:]
    assert [m["grad_norm"] for m in again.metrics] == [m["grad_norm"] for m in full.metrics][STEPS - 1:]
    with open(os.path.join(full.checkpoints[0], "mimo.json")) as f:
        assert json.load(f)["data"] == {"samples_seen": 8 * (STEPS - 1), "dataset_len": 20}
