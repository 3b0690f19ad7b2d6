"""LLaVA records as the model needs them: chat template, image rows, assistant-only loss, images, padding."""

import json
import os

import numpy as np
import pytest
import torch

from mimo_runtime.data.chat import load_tokenizer
from mimo_runtime.data.factory import DataContext
from mimo_runtime.data.images import load_pixels
from mimo_runtime.data.llava import open_llava
from mimo_runtime.data.records import DataError
from mimo_runtime.model.inputs import IMAGE_SHAPE, SPECIAL_TOKEN_IDS
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.feed import pad_to_longest

from tests.data.llava_files import SPECIAL, WORDS, record, write_dataset

IMAGE_ID = SPECIAL_TOKEN_IDS["images"]
ROWS = 4  # tiny-vlm: tokens_per_item of an image
VOCAB = {t: i for i, t in enumerate(SPECIAL + WORDS)}


def dataset(files, seq_length=0):
    data = {"format": "llava", **files, **({"seq_length": seq_length} if seq_length else {})}
    t = topology_from_dict({"model": "tiny-vlm", "data": data, "modules": {"images": {"kind": "encoder"},
                                                                           "language": {"kind": "language"}}})
    return open_llava({}, DataContext("train", 0, 0, t))


def ids(*tokens):
    return [VOCAB[t] for t in tokens]


def test_chat_template_turns_loss_only_on_assistant_turns(tmp_path):
    conv = [{"from": "system", "value": "describe"}, {"from": "human", "value": "what digit ?"},
            {"from": "gpt", "value": "one"}, {"from": "human", "value": "and this ?"}, {"from": "gpt", "value": "two"}]
    ds = dataset(write_dataset(str(tmp_path), records=[{"id": "a", "conversations": conv}]))
    t = ds.tokens(0)
    want = ids("<|system|>", "describe", "<|end|>", "<|user|>", "what", "digit", "?", "<|end|>", "<|assistant|>",
               "one", "<|end|>", "<|user|>", "and", "this", "?", "<|end|>", "<|assistant|>", "two", "<|end|>")
    assert t["input_ids"].tolist() == want
    assert t["labels"].tolist() == want[1:] + [VOCAB["<pad>"]]
    learned = [want[p + 1] for p in t["loss_mask"].nonzero().flatten().tolist()]
    assert learned == ids("one", "<|end|>", "two", "<|end|>")


def test_each_image_placeholder_becomes_the_encoders_rows(tmp_path):
    ds = dataset(write_dataset(str(tmp_path), records=[record(0, 2), record(1, 0), record(2, 1)]))
    for i, images in enumerate((2, 0, 1)):
        t = ds.tokens(i)["input_ids"]
        assert int((t == IMAGE_ID).sum()) == images * ROWS
        assert ds.num_items(i, "images") == images
        assert ds.modality(i, "images")["digits_vit"]["pixels"].shape == (images, *IMAGE_SHAPE)
    assert ds.tokens(0)["input_ids"][1:1 + 2 * ROWS].tolist() == [IMAGE_ID] * 2 * ROWS


def test_long_samples_are_truncated_and_counted_never_silently(tmp_path):
    recs = [record(0, 1, 1), record(1, 2, 9)]  # 1 + 8 + 3 + 1 + 1 + 9 + 1 = 24 tokens
    ds = dataset(write_dataset(str(tmp_path), records=recs), seq_length=20)
    assert ds.index.entries[1].length == 24
    assert ds.tokens(1)["input_ids"].numel() == 20 and ds.tokens(0)["input_ids"].numel() < 20
    assert ds.step_metrics([0, 1, 1]) == {"data_truncated": 2, "data_skipped": 0}
    assert ds.loss_tokens([1]) == int(ds.tokens(1)["loss_mask"].sum())


def test_images_whose_rows_do_not_fit_are_bad_records(tmp_path):
    files = write_dataset(str(tmp_path), records=[record(0, 0), record(1, 2)])
    with pytest.raises(DataError, match=r":2: its images end at token 9, past seq_length 8"):
        dataset(files, seq_length=8)


def test_pixels_without_a_processor_are_the_resized_image_in_0_1(tmp_path):
    from PIL import Image

    a = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(a, mode="L").save(tmp_path / "x.png")
    pixels = load_pixels(str(tmp_path / "x.png"), (1, 8, 8), None)
    want = np.asarray(Image.fromarray(a, mode="L").resize((8, 8), Image.BILINEAR), np.float32) / 255.0
    assert pixels.shape == (1, 8, 8) and np.array_equal(pixels[0], want)


def test_images_go_through_the_hf_image_processor_config(tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor

    files = write_dataset(str(tmp_path), records=[record(0, 1)])
    proc = CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    proc.save_pretrained(str(tmp_path / "proc"))
    path = os.path.join(files["image_root"], "img0_0.png")
    from mimo_runtime.data.images import load_processor

    got = load_pixels(path, (3, 8, 8), load_processor(str(tmp_path / "proc")))
    want = proc(images=Image.open(path).convert("RGB"), return_tensors="np")["pixel_values"][0]
    assert got.shape == (3, 8, 8) and np.array_equal(got, want)
    # in the tokenizer directory it is the dataset's processor, and its shape must be the model's (1, 8, 8)
    proc.save_pretrained(files["tokenizer"])
    with pytest.raises(DataError, match=r"preprocessor_config.json: gives images of shape \(3, 8, 8\); the model's "
                                        r"vision encoder takes \(1, 8, 8\)"):
        dataset(files)


def test_a_tokenizer_without_a_chat_template_or_with_another_image_id_is_refused(tmp_path):
    files = write_dataset(str(tmp_path), records=[record(0, 1)])
    with pytest.raises(DataError, match=r"<image> token has id 3; the model's image placeholder id is 5"):
        load_tokenizer(files["tokenizer"], 5)
    cfg = os.path.join(files["tokenizer"], "tokenizer_config.json")
    with open(cfg) as f:
        body = json.load(f)
    body.pop("chat_template", None)
    with open(cfg, "w") as f:
        json.dump(body, f)
    for extra in ("chat_template.jinja", "chat_template.json"):
        if os.path.exists(os.path.join(files["tokenizer"], extra)):
            os.remove(os.path.join(files["tokenizer"], extra))
    with pytest.raises(DataError, match="has no chat template"):
        load_tokenizer(files["tokenizer"], 3)


def test_microbatch_is_padded_to_its_longest_sample_rounded_to_the_cut():
    samples = [{"input_ids": torch.arange(5) + 1, "labels": torch.arange(5), "loss_mask": torch.ones(5),
                "position_ids": torch.arange(5)},
               {"input_ids": torch.arange(3) + 1, "labels": torch.arange(3), "loss_mask": torch.ones(3),
                "position_ids": torch.arange(3)}]
    out = pad_to_longest(samples, 4)
    assert [s["input_ids"].numel() for s in out] == [8, 8]
    assert out[1]["loss_mask"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert out[1]["position_ids"].tolist() == list(range(8))
    assert out[0]["input_ids"][:5].tolist() == [1, 2, 3, 4, 5]
    assert pad_to_longest(samples[:1] * 2, 5) == samples[:1] * 2


def test_heldout_records_are_their_own_split_and_evaluation_needs_them(tmp_path):
    from mimo_runtime.errors import TopologyError

    files = write_dataset(str(tmp_path), n=6)
    val = write_dataset(str(tmp_path), records=[record(40, 1), record(41, 0)], name="val")
    modules = {"images": {"kind": "encoder"}, "language": {"kind": "language"}}
    t = topology_from_dict({"model": "tiny-vlm", "modules": modules,
                            "data": {"format": "llava", **files, "heldout": {"path": val["path"]}}})
    held = open_llava({}, DataContext("heldout", 0, 0, t))
    assert len(held) == 2 and held.num_items(0, "images") == 1 and held.index.path == val["path"]
    plain = topology_from_dict({"model": "tiny-vlm", "modules": modules, "data": {"format": "llava", **files}})
    with pytest.raises(TopologyError, match="data.heldout: evaluation"):
        open_llava({}, DataContext("heldout", 0, 0, plain))
