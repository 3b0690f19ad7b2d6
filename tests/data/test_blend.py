"""`data: {blend: [...]}`: the seeded weighted interleave is exact, deterministic and resumable, and the
section is validated (data/blend.py, topology/data.py)."""

import random

import numpy as np
import pytest
import torch

from mimo_runtime.data.blend import BlendDataset, blend_order, quotas
from mimo_runtime.errors import TopologyError
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.sampler import Sampler


def cases(n=200, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        k = rng.randint(1, 5)
        yield [rng.randint(1, 60) for _ in range(k)], [rng.choice([0.1, 0.5, 1.0, 2.0, 3.3, 7.0]) for _ in range(k)]


def test_each_part_gets_its_weights_share_of_the_positions_within_one():
    for sizes, weights in cases():
        total = sum(sizes)
        q = quotas(total, weights)
        assert sum(q) == total
        assert all(abs(qc - total * w / sum(weights)) < 1 for qc, w in zip(q, weights)), (sizes, weights, q)


def test_the_blend_is_a_pure_function_of_seed_sizes_and_weights():
    for k, (sizes, weights) in enumerate(cases(50)):
        part, local = blend_order(sizes, weights, seed=k)
        again = blend_order(sizes, weights, seed=k)
        assert np.array_equal(part, again[0]) and np.array_equal(local, again[1])
        q = quotas(sum(sizes), weights)
        for c, n in enumerate(sizes):
            mine = local[part == c]
            assert len(mine) == q[c] and ((0 <= mine) & (mine < n)).all()
            seen = np.bincount(mine, minlength=n)
            assert seen.max() - seen.min() <= 1  # repeats spread evenly; a subset has no repeats
    sizes, weights = [30, 30, 40], [1.0, 2.0, 1.0]
    assert not np.array_equal(blend_order(sizes, weights, 1)[0], blend_order(sizes, weights, 2)[0])


def test_a_blend_rejects_parts_without_samples_or_weights_that_are_not_positive():
    for sizes, weights in (([3, 0], [1, 1]), ([3, 4], [1, 0]), ([3, 4], [1, -2]), ([3], [1, 1])):
        with pytest.raises(ValueError):
            blend_order(sizes, weights, 0)


class Part:
    """A tiny placement-aware dataset: sample j of part `tag` has tokens [tag, j] and j images."""

    def __init__(self, tag, n):
        self.tag, self.n, self.seq_length, self.modalities = tag, n, 2, ["images"]

    def __len__(self):
        return self.n

    def tokens(self, j):
        return {"input_ids": torch.tensor([self.tag, j])}

    def num_items(self, j, name):
        return j % 3

    def modality(self, j, name):
        return {"enc": {"x": torch.full((j % 3, 1), float(self.tag))}}

    def cost(self, j):
        return (j % 3, 2)

    def loss_tokens(self, ids):
        return len(ids)

    def step_metrics(self, ids):
        return {"data_truncated": sum(j == 0 for j in ids), "data_skipped": self.tag}


def test_the_blend_dataset_reads_each_position_from_its_part_and_keeps_batch_order():
    parts = [Part(1, 5), Part(2, 9), Part(3, 2)]
    b = BlendDataset(parts, [1.0, 1.0, 2.0], seed=3)
    assert len(b) == 16 and list(b.part).count(2) == 8  # the 2-sample part is repeated 4 times
    ids = list(range(len(b)))
    expect = [[int(b.part[i]) + 1, int(b.local[i])] for i in ids]
    assert [t["input_ids"].tolist() for t in b.tokens_batch(ids)] == expect
    assert [b.tokens(i)["input_ids"].tolist() for i in ids] == expect
    assert [b.num_items(i, "images") for i in ids] == [j % 3 for _, j in expect]
    assert [m["enc"]["x"].sum().item() for m in b.modality_batch(ids, "images")] == [t * (j % 3) for t, j in expect]
    assert b.loss_tokens(ids) == 16 and b.cost(0) == (expect[0][1] % 3, 2)
    metrics = b.step_metrics(ids)
    assert metrics == {"data_truncated": sum(j == 0 for _, j in expect), "data_skipped": 6}


def test_resuming_a_blend_at_step_k_draws_the_samples_the_uninterrupted_run_draws():
    """The data position is the sampler's: a blend rebuilt on resume (another process, same seed) maps
    every later step to the same part samples."""
    parts = [Part(1, 7), Part(2, 13)]
    run, resumed = BlendDataset(parts, [3.0, 1.0], seed=11), BlendDataset(parts, [3.0, 1.0], seed=11)
    sampler = Sampler(len(run), 8, 2, 11)
    later = Sampler(len(resumed), 8, 2, 11)
    for step in range(3, 9):  # past the end of the first epoch
        assert [run.where(i)[1] for i in sampler.step_samples(step)] == \
               [resumed.where(i)[1] for i in later.step_samples(step)]


MODULES = {"images": {"kind": "encoder"}, "language": {"kind": "language"}}


def topo(data):
    return topology_from_dict({"model": "tiny-vlm", "modules": MODULES, "data": data}, source="t.yaml")


@pytest.mark.parametrize("data, field, message", [
    ({"blend": [{"weight": 0, "format": "llava", "path": "a.jsonl"}]}, "data.blend[0].weight", "must be positive"),
    ({"blend": [{"weight": -1.5, "format": "llava", "path": "a.jsonl"}]}, "data.blend[0].weight", "must be positive"),
    ({"blend": [{"weight": 1, "format": "csv", "path": "a.jsonl"}]}, "data.blend[0].format", "must be one of"),
    ({"blend": [{"weight": 1, "path": "a.jsonl"}]}, "data.blend[0].format", "required key is missing"),
    ({"blend": [{"weight": 1, "format": "llava", "path": "a.jsonl"}], "format": "llava"}, "data.blend",
     "either blend or format"),
    ({"format": "energon"}, "data.path", "required key is missing"),
    ({"blend": [{"weight": 1, "format": "llava", "path": "a.jsonl"}], "heldout": {"path": "v.jsonl"}},
     "data.heldout.format", "required with data.blend"),
    ({"blend": [{"weight": 1, "format": "energon", "path": "nowhere"}], "tokenizer": "."}, "data.blend[0].path",
     "no such energon dataset directory or metadataset YAML"),
])
def test_a_bad_blend_section_is_one_error_naming_its_field(data, field, message):
    with pytest.raises(TopologyError) as e:
        topo(data)
    assert e.value.field == field and message in str(e.value), str(e.value)


def test_a_checkpoint_of_a_blend_continues_only_on_the_same_blend():
    from mimo_runtime.plan import make_plan
    from mimo_runtime.train.feed import Feeder

    plan = make_plan(topology_from_dict({"model": "tiny-vlm", "modules": {"images": {"kind": "encoder", "ranks": 1},
                                                                          "language": {"kind": "language", "ranks": 1}},
                                         "train": {"global_batch": 4, "micro_batch": 2}}))

    def feeder(weights):
        data = BlendDataset([Part(1, 6), Part(2, 6)], weights, seed=5)
        return Feeder(plan, data, Sampler.for_plan(plan, len(data), 5), None, None, {"images": 4})

    saved = feeder([1.0, 3.0]).data_position(2)
    assert saved["samples_seen"] == 8 and saved["dataset_len"] == 12 and saved["order"]
    assert feeder([1.0, 3.0]).position_mismatch(saved) == ""
    assert "another data blend" in feeder([1.0, 2.0]).position_mismatch(saved)  # same size, other weights
