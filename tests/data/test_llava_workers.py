"""data.workers: LLaVA samples loaded in forked worker processes, the next microbatch prefetched."""

import torch

from mimo_runtime.data import collate_modality, collate_tokens
from mimo_runtime.data.factory import DataContext
from mimo_runtime.data.llava import open_llava
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.feed import Feeder
from mimo_runtime.train.sampler import Sampler

from tests.data.llava_files import write_dataset


def feeder(files, workers):
    t = topology_from_dict({"model": "tiny-vlm", "data": {"format": "llava", **files, "workers": workers},
                            "modules": {"images": {"kind": "encoder", "ranks": 1},
                                        "language": {"kind": "language", "ranks": 1}},
                            "train": {"global_batch": 4, "micro_batch": 2}})
    plan = make_plan(t)
    data = open_llava({}, DataContext("train", 0, 0, t))
    return Feeder(plan, data, Sampler.for_plan(plan, len(data), 5), collate_tokens, collate_modality, {"images": 4})


def test_workers_load_what_the_rank_loads_itself_and_prefetch_the_next_microbatch(tmp_path):
    files = write_dataset(str(tmp_path), n=12)
    serial, parallel = feeder(files, 0), feeder(files, 2)
    lang = parallel.plan.language
    for step, mb in ((0, 0), (0, 1), (1, 0)):
        a, b = serial.tokens(step, mb, lang, 1), parallel.tokens(step, mb, lang, 1)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        next_ids = tuple(parallel.sampler.replica(step if mb == 0 else step + 1, 1 - mb, lang, 0))
        assert ("tokens", next_ids, ()) in parallel.dataset._pending  # loading while this microbatch computes
        x, y = serial.modality_inputs(step, mb, "images", 0), parallel.modality_inputs(step, mb, "images", 0)
        assert torch.equal(x["digits_vit"]["pixels"], y["digits_vit"]["pixels"])
    assert parallel.dataset._pool is not None
    assert parallel.step_metrics(0)["data_wait_s"] > 0 and 0 not in parallel._wait  # reported once


def test_the_data_position_continues_only_on_a_dataset_of_the_same_size(tmp_path):
    f = feeder(write_dataset(str(tmp_path), n=12), 0)
    assert f.data_position(3) == {"samples_seen": 12, "dataset_len": 12}
    assert f.position_mismatch(f.data_position(3)) == ""
    assert "dataset of 20 samples but this run's has 12" in f.position_mismatch({"samples_seen": 8, "dataset_len": 20})
