"""Each role builds only its modules and stages, and forward returns what the seed API promises."""

import torch

from mimo_runtime.model import MIMO_LANGUAGE_MODULE_KEY, ModuleLayout
from tests.model.fakes import H_ENC, H_LM, S, T_IMG, V, batch, build, fake_grid, indices

# images: 2 encoder stages on ranks 0-1; language: 2 stages on ranks 2-3
SPLIT = {"images": fake_grid(0, pp=2), "language": fake_grid(2, pp=2)}


def _rows(tokens) -> int:
    return int((tokens["input_ids"] == 3).sum())


def test_no_grid_map_is_colocated_with_every_module():
    model = build("tiny-avlm")
    assert model.role.mode == ModuleLayout.COLOCATED
    assert sorted(model.modality_submodules) == ["audio", "images"]
    assert model.language_model is not None


def test_grids_spanning_the_same_ranks_are_colocated():
    model = build("tiny-vlm", {"images": fake_grid(0, dp=2), "language": fake_grid(0, dp=2)}, rank=1)
    assert model.role.mode == ModuleLayout.COLOCATED
    tokens, inputs = batch("tiny-vlm", indices("tiny-vlm", 2))
    logits, loss_mask = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], None, inputs)
    assert logits.shape == (2, S, V) and loss_mask is tokens["loss_mask"]


def test_first_encoder_stage_has_embedding_but_no_projection_and_returns_hidden():
    model = build("tiny-vlm", SPLIT, rank=0)
    assert model.role.mode == ModuleLayout.NON_COLOCATED
    assert model.language_model is None and list(model.modality_submodules) == ["images"]
    sub = model.modality_submodules["images"]
    encoder = sub.encoders["digits_vit"]
    assert hasattr(encoder, "patch_embed") and len(sub.input_projections) == 0
    assert len(encoder.block.layers) == 1 and encoder.block.final_layernorm is None
    pixels = torch.rand(3, 1, 8, 8)
    out, loss_mask = model(None, modality_inputs={"images": {"digits_vit": {"pixels": pixels}}})
    assert loss_mask is None and list(out) == ["images"]
    assert out["images"].shape == (T_IMG, 3, H_ENC)  # (tokens, items, hidden) between stages


def test_last_encoder_stage_projects_rows_into_language_hidden():
    model = build("tiny-vlm", SPLIT, rank=1)
    sub = model.modality_submodules["images"]
    assert not hasattr(sub.encoders["digits_vit"], "patch_embed") and len(sub.input_projections) == 1
    model.set_input_tensor({"images": torch.randn(T_IMG, 3, H_ENC, requires_grad=True)})
    out, _ = model(None)
    assert out["images"].shape == (3 * T_IMG, H_LM)


def test_encoder_rows_are_ordered_item_by_item():
    model = build("tiny-vlm")
    pixels = torch.rand(3, 1, 8, 8)
    together = model.modality_submodules["images"](encoder_inputs={"digits_vit": {"pixels": pixels}})
    one_by_one = [model.modality_submodules["images"](encoder_inputs={"digits_vit": {"pixels": pixels[i:i + 1]}})
                  for i in range(3)]
    torch.testing.assert_close(together, torch.cat(one_by_one), atol=1e-5, rtol=1e-5)


def test_zero_items_give_empty_rows_and_a_harmless_backward():
    for rank, inputs in ((0, {"images": {"digits_vit": {"pixels": torch.zeros(0, 1, 8, 8)}}}), (1, None)):
        model = build("tiny-vlm", SPLIT, rank=rank)
        hidden = torch.zeros(T_IMG, 0, H_ENC, requires_grad=True)
        if rank == 1:
            model.set_input_tensor({"images": hidden})
        out, _ = model(None, modality_inputs=inputs)
        expected = (T_IMG, 0, H_ENC) if rank == 0 else (0, H_LM)
        assert out["images"].shape == expected
        torch.autograd.backward(out["images"], torch.zeros_like(out["images"]))
        for p in model.parameters():
            assert p.grad is None or not p.grad.any()
        if rank == 1:
            assert hidden.grad is not None and hidden.grad.shape == (T_IMG, 0, H_ENC)


def test_first_language_stage_merges_received_rows_and_returns_language_hidden():
    model = build("tiny-vlm", SPLIT, rank=2)
    lm = model.language_model
    assert model.modality_submodules.keys() == set() and lm.pre_process and not lm.post_process
    assert not hasattr(lm, "output_layer")
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 2))
    rows = torch.randn(_rows(tokens), H_LM, requires_grad=True)
    model.set_input_tensor({"images": rows})
    out, loss_mask = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"])
    assert list(out) == [MIMO_LANGUAGE_MODULE_KEY] and out["language"].shape == (S, 2, H_LM)
    out["language"].sum().backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0


def test_no_images_in_a_language_microbatch_takes_empty_rows():
    model = build("tiny-vlm", SPLIT, rank=2)
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 2, with_items=False))
    rows = torch.zeros(0, H_LM, requires_grad=True)
    model.set_input_tensor({"images": rows})
    out, _ = model(tokens["input_ids"], tokens["position_ids"])
    out["language"].sum().backward()
    assert rows.grad.shape == (0, H_LM)


def test_last_language_stage_returns_vocab_logits_or_per_token_loss():
    model = build("tiny-vlm", SPLIT, rank=3)
    lm = model.language_model
    assert not lm.pre_process and lm.post_process and lm.output_layer.weight is not None
    assert len(lm.decoder.layers) == 2 and lm.decoder.final_layernorm is not None
    tokens, _ = batch("tiny-vlm", indices("tiny-vlm", 2))
    hidden = torch.randn(S, 2, H_LM)
    model.set_input_tensor({"language": hidden})
    logits, loss_mask = model(None, loss_mask=tokens["loss_mask"])
    assert logits.shape == (2, S, V) and loss_mask is tokens["loss_mask"]
    model.set_input_tensor({"language": hidden})
    loss, _ = model(None, labels=tokens["labels"])
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens["labels"].reshape(-1), reduction="none")
    torch.testing.assert_close(loss, expected.reshape(2, S), atol=1e-5, rtol=1e-5)


def test_middle_language_stage_holds_neither_embedding_nor_output_layer():
    model = build("tiny-vlm", {"images": fake_grid(0), "language": fake_grid(1, pp=4)}, rank=2)
    lm = model.language_model
    assert not lm.pre_process and not lm.post_process and len(lm.decoder.layers) == 1
    model.set_input_tensor([torch.randn(S, 2, H_LM)])  # megatron's list form
    out, _ = model(None)
    assert out["language"].shape == (S, 2, H_LM)


def test_set_input_tensor_is_consumed_by_one_forward():
    model = build("tiny-vlm", SPLIT, rank=3)
    model.set_input_tensor({"language": [torch.randn(S, 1, H_LM)]})
    assert model.input_tensors["language"].shape == (S, 1, H_LM)  # single-element lists unwrapped
    model(None)
    assert model.input_tensors is None


def test_frozen_encoder_keeps_its_projection_trainable():
    from mimo_runtime.model import freeze_encoder

    model = build("tiny-vlm")
    freeze_encoder(model, "images")
    sub = model.modality_submodules["images"]
    assert not any(p.requires_grad for p in sub.encoders.parameters())
    assert all(p.requires_grad for p in sub.input_projections.parameters())
