"""The digits captioning task: deterministic, held out, shaped as the model expects, learnable."""

import numpy as np
import pytest
import torch

import mimo_runtime.data.dataset as dataset_module
from mimo_runtime.data import (BOS, EOS, PAD, Tokenizer, caption_accuracy, collate_modality, collate_tokens,
                               image_pool, make_dataset)
from mimo_runtime.data.audio import digit_features
from mimo_runtime.model.inputs import AUDIO_SHAPE, IMAGE_SHAPE, SPECIAL_TOKEN_IDS, tokens_per_item
from mimo_runtime.topology.presets import PRESETS

S = PRESETS["tiny-avlm"].language.seq_length


@pytest.fixture(scope="module")
def avlm():
    return make_dataset("tiny-avlm", "train", 3, size=300)


def test_same_seed_same_samples_other_seed_other_samples():
    a, b, c = (make_dataset("tiny-avlm", "train", s, size=50) for s in (3, 3, 4))
    for i in range(50):
        for key in ("input_ids", "labels", "loss_mask"):
            assert torch.equal(a.tokens(i)[key], b.tokens(i)[key])
        assert torch.equal(a.modality(i, "audio")["tone_encoder"]["features"],
                           b.modality(i, "audio")["tone_encoder"]["features"])
    assert any(a.caption(i) != c.caption(i) for i in range(50))


def test_held_out_images_never_appear_in_training():
    train, held = set(image_pool("train")), set(image_pool("heldout"))
    assert not train & held and len(train) + len(held) == 1797
    ds = make_dataset("tiny-vlm", "heldout", 0, size=200)
    assert {j for i in range(200) for j in ds.sample(i).images} <= held


def test_item_counts_vary_and_match_special_tokens(avlm):
    counts = [avlm.num_items(i, "images") for i in range(len(avlm))]
    assert set(counts) == {0, 1, 2}
    assert {avlm.num_items(i, "audio") for i in range(len(avlm))} == {0, 1}
    for i in range(40):
        ids = avlm.tokens(i)["input_ids"]
        for name in ("images", "audio"):
            assert int((ids == SPECIAL_TOKEN_IDS[name]).sum()) == avlm.num_items(i, name) * tokens_per_item(name)


def test_num_items_computes_no_features(avlm, monkeypatch):
    def boom(*args):
        raise AssertionError("num_items built audio features")

    monkeypatch.setattr(dataset_module, "digit_features", boom)
    fresh = make_dataset("tiny-avlm", "train", 9, size=100)
    assert sum(fresh.num_items(i, "audio") for i in range(100)) > 0


def test_tokens_layout_and_loss_mask(avlm):
    tok = Tokenizer()
    for i in range(40):
        t = avlm.tokens(i)
        assert all(t[k].shape == (S,) for k in t)
        assert t["input_ids"][0] == BOS and t["input_ids"][-1] == PAD
        assert torch.equal(t["position_ids"], torch.arange(S))
        assert torch.equal(t["labels"][:-1], t["input_ids"][1:])
        masked = t["labels"][t["loss_mask"] > 0]
        assert masked[-1] == EOS and tok.decode(masked) == avlm.caption(i)  # exactly the caption and EOS
        first = int(torch.nonzero(t["loss_mask"])[0])
        assert t["input_ids"][first + 1] not in SPECIAL_TOKEN_IDS.values()
        assert (t["input_ids"][: first + 1] != PAD).all()


def test_captions_name_image_then_clip_digits(avlm):
    labels = dataset_module._digits()[1]
    for i in range(40):
        s = avlm.sample(i)
        words = [str(labels[j]) for j in s.images] + [str(d) for d in s.clips]
        assert avlm.caption(i) == (" ".join(words) if words else "none")


def test_modality_tensors_are_stacked_items(avlm):
    for i in range(20):
        img = avlm.modality(i, "images")["digits_vit"]["pixels"]
        aud = avlm.modality(i, "audio")["tone_encoder"]["features"]
        assert img.shape == (avlm.num_items(i, "images"), *IMAGE_SHAPE) and img.dtype == torch.float32
        assert aud.shape == (avlm.num_items(i, "audio"), *AUDIO_SHAPE) and aud.dtype == torch.float32
        assert 0.0 <= float(img.min()) if img.numel() else True


def test_collate_concatenates_in_sample_order(avlm):
    idx = [0, 1, 2, 3, 4]
    tokens = collate_tokens([avlm.tokens(i) for i in idx])
    assert tokens["input_ids"].shape == (5, S) and tokens["loss_mask"].shape == (5, S)
    pixels = collate_modality([avlm.modality(i, "images") for i in idx])["digits_vit"]["pixels"]
    expected = torch.cat([avlm.modality(i, "images")["digits_vit"]["pixels"] for i in idx])
    assert torch.equal(pixels, expected)


def test_caption_accuracy_is_exact_match_under_teacher_forcing(avlm):
    batch = collate_tokens([avlm.tokens(i) for i in range(4)])
    perfect = torch.nn.functional.one_hot(batch["labels"], 64).float()
    assert caption_accuracy(perfect, batch) == 1.0
    b, s = 2, int(torch.nonzero(batch["loss_mask"][2])[-1])
    perfect[b, s] = perfect[b, s].roll(1)  # sample 2 gets its EOS wrong
    assert caption_accuracy(perfect, batch) == 0.75


def test_dtmf_clips_are_separable_by_digit():
    """Nearest-centroid on band energies recognizes fresh clips: the audio task is learnable."""
    def bands(d, k):
        return digit_features(d, [1, d, k]).mean(axis=1)

    centroids = np.stack([np.mean([bands(d, k) for k in range(8)], axis=0) for d in range(10)])
    tests = [(d, bands(d, 100 + k)) for d in range(10) for k in range(5)]
    hits = sum(int(np.argmin(((centroids - x) ** 2).sum(1)) == d) for d, x in tests)
    assert hits / len(tests) >= 0.9


def test_tokenizer_round_trip_and_alphabet():
    tok = Tokenizer()
    assert tok.decode(tok.encode("3 7 none")) == "3 7 none"
    assert tok.vocab_size <= PRESETS["tiny-vlm"].language.vocab_size
    with pytest.raises(ValueError, match=r"\['Q'\]"):
        tok.encode("Q")


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        make_dataset("huge", "train", 0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        make_dataset("tiny-vlm", "test", 0)
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        make_dataset("tiny-vlm", "train", 0).num_items(0, "audio")
