"""`format: energon`: megatron-energon datasets (prepared with energon's own tools) as the samples
`format: llava` gives, indexed before any rank starts, with one-line errors (data/energon.py)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mimo_runtime.data import energon
from mimo_runtime.data.blend import BlendDataset
from mimo_runtime.data.factory import DataContext
from mimo_runtime.data.records import DataError
from mimo_runtime.data.sources import index_data, open_files
from mimo_runtime.topology import topology_from_dict

from tests.data.energon_files import crude_from_llava, write_captioning, write_energon_dataset, write_shards, write_vqa
from tests.data.llava_files import record

MODULES = {"images": {"kind": "encoder"}, "language": {"kind": "language"}}


def topo(data, source="<test>"):
    return topology_from_dict({"model": "tiny-vlm", "modules": MODULES, "data": data,
                               "train": {"global_batch": 4, "micro_batch": 2}}, source=source)


def opened(t, split="train"):
    return open_files({}, DataContext(split, 0, 0, t, ("images",)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """16 records with 0, 1 and 2 images as LLaVA files and as an energon crude dataset (train 3/4, val 1/4)."""
    return write_energon_dataset(str(tmp_path_factory.mktemp("energon")), n=16, split=(0.75, 0.25, 0.0))


def test_energon_samples_equal_the_llava_samples_of_the_same_records(files):
    e = opened(topo({"format": "energon", "path": files["energon"], "tokenizer": files["tokenizer"], "seq_length": 16}))
    plain = opened(topo({"format": "llava", "path": files["path"], "image_root": files["image_root"],
                         "tokenizer": files["tokenizer"], "seq_length": 16}))
    by_id = {}
    for i in range(len(plain)):  # energon's train split holds a subset of the records: match them by tokens
        by_id[tuple(plain.tokens(i)["input_ids"].tolist())] = i
    assert isinstance(e, energon.EnergonDataset) and 0 < len(e) < len(plain)
    counts = set()
    for i in range(len(e)):
        mine = e.tokens(i)
        j = by_id[tuple(mine["input_ids"].tolist())]
        theirs = plain.tokens(j)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
        a, b = e.modality(i, "images"), plain.modality(j, "images")
        assert all(torch.equal(a[k][f], b[k][f]) for k in b for f in b[k])
        assert e.cost(i) == plain.cost(j) and e.num_items(i, "images") == plain.num_items(j, "images")
        counts.add(e.num_items(i, "images"))
    assert counts == {0, 1, 2}


def test_the_heldout_split_is_the_val_split_of_its_dataset(files):
    data = {"format": "energon", "path": files["energon"], "tokenizer": files["tokenizer"],
            "heldout": {"path": files["energon"]}}
    t = topo(data)
    train, val = opened(t), opened(t, "heldout")
    assert len(train) + len(val) == 16 and len(val) > 0
    assert [len(i.entries) for i in index_data(t, heldout=True)] == [len(train), len(val)]


def test_workers_load_the_same_samples_through_their_own_energon_reader(files):
    t = topo({"format": "energon", "path": files["energon"], "tokenizer": files["tokenizer"], "workers": 2})
    e = opened(t)
    ids = list(range(len(e)))
    inline = [e.tokens(i) for i in ids]
    forked = e.tokens_batch(ids)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(inline, forked) for k in a)
    pixels = [e.modality(i, "images") for i in ids]
    for a, b in zip(pixels, e.modality_batch(ids, "images")):
        assert all(torch.equal(a[k][f], b[k][f]) for k in a for f in a[k])


def test_captioning_and_vqa_samples_become_conversations(tmp_path):
    cap = write_captioning(str(tmp_path / "cap"), ["seven", "one two"])
    vqa = write_vqa(str(tmp_path / "vqa"), ["what digit ?", "what digits ?"], [["one", "two"], ["three"]],
                    [[0.2, 0.8], [1.0]])
    got = []
    for path in (cap, vqa):
        reader = energon.Reader(path, "train")
        got += [energon.as_record(reader.sample(i)) for i in range(len(reader))]
    turns = [[(t["from"], t["value"]) for t in r["conversations"]] for r, _ in got]
    assert turns == [[("human", "<image>"), ("gpt", "seven")], [("human", "<image>"), ("gpt", "one two")],
                     [("human", "<image>\nwhat digit ?"), ("gpt", "two")],  # the answer of the largest weight
                     [("human", "<image>\nwhat digits ?"), ("gpt", "three")]]
    assert all(list(images) == ["image"] and images["image"][:4] == b"\x89PNG" for _, images in got)


def test_an_energon_metadataset_is_a_blend_with_its_weights(files, tmp_path):
    cap = write_captioning(str(tmp_path / "cap"), ["seven", "one two", "three"])
    meta = tmp_path / "meta.yaml"
    meta.write_text("__module__: megatron.energon\n__class__: MetadatasetV2\nsplits:\n  train:\n    blend:\n"
                    f"      - weight: 3\n        path: {files['energon']}\n      - weight: 1\n        path: {cap}\n")
    t = topo({"format": "energon", "path": str(meta), "tokenizer": files["tokenizer"]})
    b = opened(t)
    assert isinstance(b, BlendDataset) and b.weights == [0.75, 0.25]
    n = len(b)
    assert n == len(b.parts[0]) + 3 and list(b.part).count(1) == round(n / 4)
    assert [len(i.entries) for i in index_data(t)] == [len(b.parts[0]), 3]


def test_a_bad_sample_names_its_shard_and_key_and_skip_counts_it(files, tmp_path):
    good = record(1, 1)  # the fixture wrote its image
    bad = {**record(2, 2), "conversations": record(2, 1)["conversations"]}  # one <image>, two images
    d = crude_from_llava(str(tmp_path / "bad"), [good, good, bad], files["image_root"], per_shard=2)
    data = {"format": "energon", "path": d, "tokenizer": files["tokenizer"]}
    with pytest.raises(DataError) as e:
        index_data(topo(data))
    assert str(e.value) == f"{d}/shard_1.tar: sample s002: 1 <image> placeholder(s) but 2 image(s)"
    index = index_data(topo({**data, "on_error": "skip"}))[0]
    assert len(index.entries) == 2 and index.skipped == 1
    assert opened(topo({**data, "on_error": "skip"})).step_metrics([0, 1])["data_skipped"] == 1


def test_the_index_is_cached_in_the_datasets_nv_meta(files, monkeypatch):
    t = topo({"format": "energon", "path": files["energon"], "tokenizer": files["tokenizer"], "seq_length": 20})
    first = index_data(t)[0]
    assert os.path.isfile(os.path.join(files["energon"], ".nv-meta", "mimo-index.train.json"))
    monkeypatch.setattr(energon, "build_index", lambda *a: pytest.fail("indexed again"))
    assert index_data(t)[0].entries == first.entries


def test_an_unprepared_directory_is_one_error_line_exit_2_before_any_rank_starts(tmp_path, files):
    shards = write_shards(str(tmp_path / "raw"), [{"json": json.dumps(record(0, 0)).encode()}])
    path = tmp_path / "t.yaml"
    path.write_text(f"model: tiny-vlm\ndata: {{format: energon, path: raw, tokenizer: {files['tokenizer']}}}\n"
                    "modules:\n  images: {kind: encoder}\n  language: {kind: language}\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "GLOO_SOCKET_IFNAME": "lo"}
    for command in (["train", str(path), "--steps", "1"], ["check", str(path)]):
        p = subprocess.run([sys.executable, "-m", "mimo_runtime.launch.cli", *command], capture_output=True,
                           text=True, env=env, timeout=300)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip().splitlines() == [f"error: {shards}: not a megatron-energon dataset: no .nv-meta/ "
                                                 f"(prepare it with `energon prepare`)"], command


def test_a_blend_of_an_energon_and_a_llava_dataset_reads_each_part_as_itself(files):
    llava = {"weight": 1, "format": "llava", "path": files["path"], "image_root": files["image_root"]}
    t = topo({"blend": [{"weight": 2, "format": "energon", "path": files["energon"]}, llava],
              "tokenizer": files["tokenizer"], "seq_length": 16,
              "heldout": {"format": "energon", "path": files["energon"]}})
    b = opened(t)
    assert isinstance(opened(t, "heldout"), energon.EnergonDataset)  # the val split, as its format says
    assert isinstance(b, BlendDataset) and [type(p).__name__ for p in b.parts] == ["EnergonDataset", "LlavaDataset"]
    assert len(b) == len(b.parts[0]) + 16 and list(b.part).count(0) == round(len(b) * 2 / 3)
    for i in range(len(b)):
        part, j = b.where(i)
        assert torch.equal(b.tokens(i)["input_ids"], part.tokens(j)["input_ids"])
        assert b.num_items(i, "images") == part.num_items(j, "images")
    assert [len(x.entries) for x in index_data(t)] == [len(b.parts[0]), 16]


def test_an_image_part_that_does_not_decode_is_a_bad_sample(files, tmp_path):
    from mimo_runtime.data.energon import prepare

    rec = {**record(1, 1), "image": ["0.png"]}
    d = write_shards(str(tmp_path / "broken"), [{"json": json.dumps(rec).encode(), "0.png": b"not a png"}])
    prepare(d, "CrudeWebdataset")
    with pytest.raises(DataError) as e:
        index_data(topo({"format": "energon", "path": d, "tokenizer": files["tokenizer"]}))
    assert str(e.value).startswith(f"{d}/shard_0.tar: sample s000: unreadable image 0.png: ")


def test_language_ranks_read_only_the_record_part_and_encoder_ranks_only_the_image_parts(files):
    e = opened(topo({"format": "energon", "path": files["energon"], "tokenizer": files["tokenizer"]}))
    two = next(i for i in range(len(e)) if e.num_items(i, "images") == 2)
    e.tokens(two), e.modality(two, "images")
    k = e.index.entries[two].line
    parts = {p: {n for n in e.readers[p].sample(k) if not n.startswith("__")} for p in ("text", "images")}
    assert parts == {"text": {"json"}, "images": {"0.png", "1.png"}}
