"""Bad input raises a ValueError that names the modality and the expected vs actual numbers."""

import pytest
import torch

from tests.model.fakes import H_ENC, H_LM, T_IMG, batch, build, fake_grid, indices

SPLIT = {"images": fake_grid(0, pp=2), "language": fake_grid(2)}


@pytest.fixture(scope="module")
def colocated():
    return build("tiny-vlm")


def _pixels(n):
    return {"images": {"digits_vit": {"pixels": torch.rand(n, 1, 8, 8)}}}


def test_more_images_than_special_tokens(colocated):
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 1, with_items=True))
    n = int((tokens["input_ids"] == 3).sum()) // T_IMG
    with pytest.raises(ValueError, match=rf"Number of images tokens \({T_IMG * n}\) does not match number of "
                                         rf"images embeddings \({T_IMG * (n + 1)}\) \(special token id 3\)"):
        colocated(tokens["input_ids"], modality_inputs=_pixels(n + 1))


def test_special_tokens_without_images(colocated):
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 1, with_items=True))
    count = int((tokens["input_ids"] == 3).sum())
    with pytest.raises(ValueError, match=rf"Number of images tokens \({count}\) does not match number of images embeddings \(0\)"):
        colocated(tokens["input_ids"])


def test_unknown_modality_key(colocated):
    with pytest.raises(ValueError, match=r"unknown modality 'video' in modality_inputs; this model has \['images'\]"):
        colocated(torch.ones(1, 8, dtype=torch.long), modality_inputs={"video": {}})


def test_unknown_encoder_key(colocated):
    with pytest.raises(ValueError, match=r"images: unknown encoder key\(s\) \['clip'\]; expected \['digits_vit'\]"):
        colocated(torch.ones(1, 8, dtype=torch.long), modality_inputs={"images": {"clip": {"pixels": None}}})


@pytest.mark.parametrize("shape, detail", [((2, 8, 8), r"got \(2, 8, 8\) \(3-D, expected 4-D\)"),
                                           ((2, 1, 7, 7), r"got \(2, 1, 7, 7\)")])
def test_wrong_pixel_rank_or_shape(colocated, shape, detail):
    bad = {"images": {"digits_vit": {"pixels": torch.rand(*shape)}}}
    with pytest.raises(ValueError, match=rf"images: 'pixels' must have shape \(items, 1, 8, 8\), {detail}"):
        colocated(torch.ones(1, 8, dtype=torch.long), modality_inputs=bad)


def test_received_rows_of_the_wrong_width():
    model = build("tiny-vlm", SPLIT, rank=2)
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 1, with_items=True))
    count = int((tokens["input_ids"] == 3).sum())
    model.set_input_tensor({"images": torch.zeros(count, H_ENC)})
    with pytest.raises(ValueError, match=rf"images: embeddings must have shape \(rows, {H_LM}\), "
                                         rf"got \({count}, {H_ENC}\)"):
        model(tokens["input_ids"])


def test_received_row_count_differs_from_special_tokens():
    model = build("tiny-vlm", SPLIT, rank=2)
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 1, with_items=True))
    count = int((tokens["input_ids"] == 3).sum())
    model.set_input_tensor({"images": torch.zeros(count - T_IMG, H_LM)})
    with pytest.raises(ValueError, match=rf"Number of images tokens \({count}\) does not match .* \({count - T_IMG}\)"):
        model(tokens["input_ids"])


def test_unknown_modality_sent_to_the_language_model():
    model = build("tiny-vlm", SPLIT, rank=2)
    model.set_input_tensor({"audio": torch.zeros(8, H_LM)})
    with pytest.raises(ValueError, match=r"unknown modality \['audio'\] in encoder embeddings; known: \['images'\]"):
        model(torch.ones(1, 8, dtype=torch.long))


def test_modality_input_on_a_rank_without_that_encoder():
    model = build("tiny-vlm", SPLIT, rank=2)
    with pytest.raises(ValueError, match=r"modality_inputs has 'images', but this rank holds no 'images' encoder "
                                         r"\(it holds \['language'\]\)"):
        model(torch.ones(1, 8, dtype=torch.long), modality_inputs=_pixels(1))


def test_modality_input_on_a_later_encoder_stage():
    model = build("tiny-vlm", SPLIT, rank=1)
    with pytest.raises(ValueError, match="holds a non-first stage of 'images'"):
        model(None, modality_inputs=_pixels(1))


def test_hidden_states_of_the_wrong_shape_between_encoder_stages():
    model = build("tiny-vlm", SPLIT, rank=1)
    model.set_input_tensor({"images": torch.zeros(T_IMG + 1, 2, H_ENC)})
    with pytest.raises(ValueError, match=rf"images: stage input must have shape \({T_IMG}, items, {H_ENC}\), "
                                         rf"got \({T_IMG + 1}, 2, {H_ENC}\)"):
        model(None)


def test_later_language_stage_without_its_input():
    model = build("tiny-vlm", {"images": fake_grid(0), "language": fake_grid(1, pp=2)}, rank=2)
    with pytest.raises(ValueError, match=r"needs set_input_tensor\(\{'language': h\}\)"):
        model(None)


def test_encoder_rows_sent_to_a_later_language_stage():
    model = build("tiny-vlm", {"images": fake_grid(0), "language": fake_grid(1, pp=2)}, rank=2)
    model.set_input_tensor({"images": torch.zeros(T_IMG, H_LM), "language": torch.zeros(8, 1, H_LM)})
    with pytest.raises(ValueError, match=r"takes only 'language' hidden states, got \['images', 'language'\]"):
        model(None)


def test_attention_mask_of_the_wrong_rank(colocated):
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, S\) or \(B, 1, S, S\), got shape \(8,\)"):
        colocated(torch.ones(1, 8, dtype=torch.long), attention_mask=torch.ones(8))


def test_grid_map_keys_must_match_the_modalities():
    with pytest.raises(ValueError, match="module_to_grid_map keys"):
        build("tiny-vlm", {"audio": fake_grid(0), "language": fake_grid(1)}, rank=0)
