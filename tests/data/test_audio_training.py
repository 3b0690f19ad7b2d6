"""LLaVA records with audio, images and text-only samples train a heterogeneous topology like the
colocated single-process run (DESIGN "Semantics"), and each rank reads only its own modality."""

import pytest

from mimo_runtime.data.llava import index_topology
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.loop import RunConfig
from mimo_runtime.train.sampler import Sampler

from tests.data.audio_files import write_av_dataset
from tests.data.rank_fns import train_runs
from tests.train.equivalence import STEPS, assert_matches_reference, run

ENC, LANG = {"kind": "encoder"}, {"kind": "language"}
SHAPES = {  # modules in rank order: images, audio, language
    "images1_audio1_to_language_tp2": {"images": {**ENC, "ranks": 1}, "audio": {**ENC, "ranks": 1},
                                       "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}},
    "images1_audio_dp2_to_language1": {"images": {**ENC, "ranks": 1}, "audio": {**ENC, "ranks": 2,
                                                                                "parallel": {"dp": 2}},
                                       "language": {**LANG, "ranks": 1}},
}


def topology(files, modules):
    return topology_from_dict({"model": "tiny-avlm", "modules": modules, "data": {"format": "llava", **files},
                               "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}}, source="<test>")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 4-rank launch for both shapes, and the colocated reference."""
    files = write_av_dataset(str(tmp_path_factory.mktemp("av")), n=24)
    scenarios = {name: topology(files, modules) for name, modules in SHAPES.items()}
    index_topology(scenarios["images1_audio1_to_language_tp2"])  # what the launcher does before starting ranks
    cfg = RunConfig(steps=STEPS, seed=7, nproc=4, timeout_s=30, progress=False, capture_grads_step=0)
    results = spawn(train_runs, 4, args=([(topo, cfg) for topo in scenarios.values()],), timeout_s=400,
                    collective_timeout_s=30)
    by_name = {name: [rank_runs[k] for rank_runs in results] for k, name in enumerate(scenarios)}
    reference = run(scenarios["images1_audio1_to_language_tp2"], colocated=True, nproc=1)[0]
    return scenarios, by_name, reference


@pytest.mark.parametrize("name", list(SHAPES))
def test_audio_image_and_text_samples_on_a_heterogeneous_topology_match_colocated(runs, name):
    scenarios, by_name, reference = runs
    assert_matches_reference(scenarios[name], [r for r, _ in by_name[name]], reference)


def test_audio_ranks_read_only_their_clips_and_image_ranks_only_their_images(runs):
    scenarios, by_name, _ = runs
    index = index_topology(scenarios["images1_audio_dp2_to_language1"])["train"]
    steps = [Sampler(len(index.entries), 8, 2, 7).step_samples(s) for s in range(STEPS)]
    clips = sum(len(index.entries[i].audio) for s in steps for i in s)
    images = sum(len(index.entries[i].images) for s in steps for i in s)
    reads = [r for _, r in by_name["images1_audio_dp2_to_language1"]]
    assert clips > 0 and images > 0
    assert reads[0] == {"images": images}
    assert all(set(r) <= {"audio"} for r in reads[1:3]) and sum(r.get("audio", 0) for r in reads[1:3]) == clips
    assert reads[3] == {"records": 8 * STEPS}
