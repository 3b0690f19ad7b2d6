"""The B/W split: B leaves the linears' weight gradients for W, and B + W give megatron's gradients."""

import torch

from mimo_runtime.model.weight_grad import WeightGradQueue, split_weight_gradients
from tests.model.fakes import batch, build, indices


def _loss(model, tokens, inputs):
    logits, _ = model(input_ids=tokens["input_ids"], position_ids=tokens["position_ids"], modality_inputs=inputs)
    return logits.float().pow(2).mean()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_b_then_w_gives_the_gradients_of_one_backward():
    tokens, inputs = batch("tiny-vlm", indices("tiny-vlm", 2, with_items=True))
    plain, split = build("tiny-vlm"), build("tiny-vlm")
    _loss(plain, tokens, inputs).backward()
    want = _grads(plain)
    queue = WeightGradQueue()
    assert split_weight_gradients(split, queue) >= 4 * 4 + 1  # qkv, proj, fc1, fc2 per layer; output layer
    for mb in range(2):  # two microbatches of the same samples: W of each one after both B's
        with queue.recording(mb):
            _loss(split, tokens, inputs).backward()
    after_b = _grads(split)
    assert "language_model.decoder.layers.0.mlp.linear_fc1.weight" not in after_b  # deferred to W
    assert "language_model.decoder.layers.0.self_attention.linear_qkv.bias" not in after_b  # inside the matmul
    assert "language_model.decoder.layers.0.mlp.linear_fc1.bias" in after_b  # skip_bias_add: added outside
    assert "language_model.decoder.layers.0.mlp.linear_fc2.bias" in after_b  # a bias after the row all-reduce
    torch.testing.assert_close(after_b["language_model.decoder.final_layernorm.weight"],
                               2 * want["language_model.decoder.final_layernorm.weight"])
    assert queue.compute(0) == queue.compute(1) > 0
    assert not queue.pending
    got = _grads(split)
    assert set(got) == set(want)
    for name, g in want.items():
        torch.testing.assert_close(got[name], 2 * g, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_a_split_backward_outside_a_recorded_b_fails_loudly():
    tokens, inputs = batch("tiny-vlm", indices("tiny-vlm", 1, with_items=True))
    model = build("tiny-vlm")
    split_weight_gradients(model, WeightGradQueue())
    try:
        _loss(model, tokens, inputs).backward()
    except RuntimeError as e:
        assert "outside a recorded B action" in str(e)
    else:
        raise AssertionError("expected a RuntimeError")
