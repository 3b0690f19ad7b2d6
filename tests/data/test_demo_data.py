"""The demo's LLaVA-format dataset (data/demo_data.py): the built-in digits task written to disk, read
back through `data: {format: llava}` exactly as topologies/demo.yaml reads it."""

import os
from pathlib import Path

import numpy as np
import pytest

from mimo_runtime.data import demo_data
from mimo_runtime.data.dataset import CaptionDataset, _digits
from mimo_runtime.data.llava import IMAGES, LlavaDataset, facts_for, index_topology
from mimo_runtime.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"train": 48, "heldout": 16}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("demo") / "demo-data")
    assert demo_data.prepare(d, sizes=SIZES)
    return d


def demo_topology(d):
    """topologies/demo.yaml with its data paths pointed at `d`."""
    return load_topology(str(ROOT / "topologies" / "demo.yaml"),
                         [f"data.path={d}/train.jsonl", f"data.image_root={d}/images",
                          f"data.tokenizer={d}/tokenizer", f"data.heldout.path={d}/heldout.jsonl"])


def test_the_written_dataset_indexes_cleanly_for_both_splits(written):
    indexes = index_topology(demo_topology(written), heldout=True)
    assert {s: len(ix.entries) for s, ix in indexes.items()} == SIZES
    assert all(ix.skipped == 0 for ix in indexes.values())


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_each_sample_decodes_to_the_built_in_digit_caption_and_images(written, split):
    from transformers import AutoTokenizer

    topo = demo_topology(written)
    facts = facts_for(topo, split)
    data = LlavaDataset(index_topology(topo, heldout=True)[split], facts)
    builtin = CaptionDataset("tiny-vlm", split, demo_data.SEED, SIZES[split])
    tok = AutoTokenizer.from_pretrained(f"{written}/tokenizer", local_files_only=True)
    digits = _digits()[0]
    for i in range(SIZES[split]):
        t = data.tokens(i)
        answer = tok.convert_ids_to_tokens(t["labels"][t["loss_mask"] > 0].tolist())
        assert answer == builtin.caption(i).split() + ["<|end|>"]
        images = builtin.sample(i).images
        assert int((t["input_ids"] == facts.image_id).sum()) == facts.rows * len(images)
        pixels = next(iter(data.modality(i, IMAGES).values()))
        got = next(iter(pixels.values())).numpy()
        want = digits[list(images)].reshape(got.shape)
        assert got.shape[0] == len(images) and np.all(np.abs(got - want) <= 1 / 255)
    assert any(not builtin.sample(i).images for i in range(SIZES[split]))  # "none" captions are covered too


def test_the_held_out_split_uses_only_held_out_images(written):
    import json

    def used(split):
        names = set()
        for line in open(f"{written}/{split}.jsonl"):
            value = json.loads(line).get("image", [])
            names.update([value] if isinstance(value, str) else value)
        return names

    assert used("train") and used("heldout") and not used("train") & used("heldout")


def test_a_matching_dataset_is_reused_and_a_different_one_rewritten(written):
    stamp = os.stat(f"{written}/train.jsonl").st_mtime_ns
    assert not demo_data.prepare(written, sizes=SIZES)
    assert os.stat(f"{written}/train.jsonl").st_mtime_ns == stamp
    assert demo_data.prepare(written, sizes={"train": 8, "heldout": 4})
    assert sum(1 for _ in open(f"{written}/train.jsonl")) == 8
    assert not os.path.exists(written + ".tmp")
