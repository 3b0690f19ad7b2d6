"""data: {format: llava}: the section, the index built before any rank starts, and its one-line errors."""

import json
import os
import subprocess
import sys

import pytest

import mimo_runtime.data.index as index_module
from mimo_runtime.data.llava import index_topology
from mimo_runtime.data.records import DataError
from mimo_runtime.errors import TopologyError
from mimo_runtime.topology import load_topology, topology_from_dict

from tests.data.llava_files import record, write_dataset

MODULES = {"images": {"kind": "encoder"}, "language": {"kind": "language"}}


def topo(files, **data):
    return topology_from_dict({"model": "tiny-vlm", "modules": MODULES,
                               "data": {"format": "llava", **files, **data}}, source="<test>")


def bad_records():
    """(records, line of the bad one as written in JSONL, expected message start)."""
    good = record(0, 1)
    cases = {
        "missing_image": ({**record(1, 1), "image": "nowhere.png"}, "missing image "),
        "placeholders_differ": ({**record(1, 2), "image": "img1_0.png"}, "2 <image> placeholder(s) but 1 image(s)"),
        "no_conversations": ({"id": "x", "image": "img0_0.png"}, "record has no conversations"),
        "no_gpt_turn": ({"id": "x", "conversations": [{"from": "human", "value": "say hello"}]},
                        "record has no gpt turn"),
    }
    return good, cases


@pytest.mark.parametrize("case", ["missing_image", "placeholders_differ", "no_conversations", "no_gpt_turn"])
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_bad_record_is_one_error_naming_file_and_line(tmp_path, case, fmt):
    good, cases = bad_records()
    bad, message = cases[case]
    files = write_dataset(str(tmp_path), records=[good, good, bad, good], fmt=fmt)
    if case == "missing_image":
        os.remove(os.path.join(files["image_root"], "nowhere.png"))
    with pytest.raises(DataError) as e:
        index_topology(topo(files))
    # JSONL: record 3 is line 3; the indented array: `[` on line 1, then each record's opening line
    line = 3 if fmt == "jsonl" else _array_line(files["path"], 2)
    assert str(e.value).startswith(f"{files['path']}:{line}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def _array_line(path, k):
    with open(path) as f:
        lines = f.read().splitlines()
    starts = [n for n, text in enumerate(lines, start=1) if text == "  {"]
    return starts[k]


def test_broken_json_names_its_line(tmp_path):
    files = write_dataset(str(tmp_path), n=3)
    with open(files["path"], "a") as f:
        f.write('{"id": "x", "conversations": [}\n')
    with pytest.raises(DataError, match=rf"^{files['path']}:4: broken JSON: "):
        index_topology(topo(files))


def test_unreadable_image_names_the_record(tmp_path):
    files = write_dataset(str(tmp_path), records=[record(0, 0), record(1, 1)])
    with open(os.path.join(files["image_root"], "img1_0.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=rf"^{files['path']}:2: unreadable image .*img1_0.png"):
        index_topology(topo(files))


def test_on_error_skip_leaves_bad_records_out_and_counts_them(tmp_path):
    good, cases = bad_records()
    recs = [good, cases["no_conversations"][0], good, cases["placeholders_differ"][0], good]
    files = write_dataset(str(tmp_path), records=recs)
    index = index_topology(topo(files, on_error="skip"))["train"]
    assert [e.line for e in index.entries] == [1, 3, 5]
    assert index.skipped == 2 and index.first_error.startswith(f"{files['path']}:2: record has no conversations")


def test_index_is_cached_beside_the_data_and_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    files = write_dataset(str(tmp_path), n=6)
    first = index_topology(topo(files))["train"]
    assert os.path.isfile(files["path"] + index_module.SUFFIX)
    monkeypatch.setattr(index_module, "build_index", lambda *a: pytest.fail("indexed again"))
    assert index_topology(topo(files))["train"].entries == first.entries
    with open(files["path"], "a") as f:
        f.write(json.dumps(record(6, 1)) + "\n")
    built = []
    monkeypatch.setattr(index_module, "build_index", lambda *a: built.append(a) or first)
    index_topology(topo(files))
    assert built, "a changed file (size, mtime) must be indexed again"


def test_counts_in_the_index(tmp_path):
    files = write_dataset(str(tmp_path), records=[record(0, 0, 1), record(1, 2, 3)])
    a, b = index_topology(topo(files))["train"].entries
    assert (a.images, b.images) == ((), ("img1_0.png", "img1_1.png"))
    # <|user|> say hello <|end|> <|assistant|> zero <|end|>: the answer and its end-of-turn carry the loss
    assert (a.length, a.loss_tokens) == (7, 2)
    assert b.length == 1 + 2 * 4 + 3 + 2 + 3 + 1 and b.loss_tokens == 4


def test_data_section_is_validated_with_paths_relative_to_the_topology_file(tmp_path):
    write_dataset(str(tmp_path), n=4)
    path = tmp_path / "t.yaml"
    path.write_text("model: tiny-vlm\ndata: {format: llava, path: train.jsonl, image_root: images, "
                    "tokenizer: tokenizer, packing: true}\nmodules:\n  images: {kind: encoder}\n"
                    "  language: {kind: language}\n")
    t = load_topology(str(path))
    assert t.data.path == str(tmp_path / "train.jsonl") and t.train.packing
    for data, field in (({"tokenizer": "nowhere"}, "data.tokenizer"), ({"seq_length": 64}, "data.seq_length"),
                        ({"on_error": "ignore"}, "data.on_error"), ({"pathh": "x"}, "data.pathh")):
        with pytest.raises(TopologyError) as e:
            topo({"path": str(tmp_path / "train.jsonl"), "tokenizer": str(tmp_path / "tokenizer"), **data})
        assert e.value.field == field


def test_cli_reports_a_bad_record_in_one_line_exit_2_before_any_rank_starts(tmp_path):
    good, cases = bad_records()
    write_dataset(str(tmp_path), records=[good, cases["missing_image"][0]])
    os.remove(tmp_path / "images" / "nowhere.png")
    path = tmp_path / "t.yaml"
    path.write_text("model: tiny-vlm\ndata: {format: llava, path: train.jsonl, image_root: images, "
                    "tokenizer: tokenizer}\nmodules:\n  images: {kind: encoder}\n  language: {kind: language}\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, "-m", "mimo_runtime.launch.cli", "train", str(path), "--steps", "1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'train.jsonl'}:2: missing image {tmp_path / 'images' / 'nowhere.png'}"]
