"""Colocated single-process training on the digits task: the loss falls by half within 50 steps."""

import time

import torch

from mimo_runtime.data import collate_modality, collate_tokens, make_dataset
from mimo_runtime.groups import build_module_groups
from mimo_runtime.model import build_model, masked_token_loss_sum
from mimo_runtime.plan import colocated_plan
from mimo_runtime.topology import topology_from_dict

STEPS, BATCH = 50, 8


def test_colocated_digits_loss_halves_within_50_steps():
    topo = topology_from_dict({"model": "tiny-vlm", "modules": {
        "images": {"kind": "encoder", "ranks": 1}, "language": {"kind": "language", "ranks": 1}},
        "train": {"global_batch": BATCH, "micro_batch": BATCH}})
    plan = colocated_plan(topo, 1)
    model = build_model(plan, build_module_groups(plan, 30), 0, seed=0)
    data = make_dataset("tiny-vlm", "train", 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses, seconds = [], 0.0
    for step in range(STEPS):
        idx = range(step * BATCH, (step + 1) * BATCH)
        tokens = collate_tokens([data.tokens(i) for i in idx])
        inputs = {"images": collate_modality([data.modality(i, "images") for i in idx])}
        start = time.perf_counter()
        logits, mask = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], None, inputs)
        loss = masked_token_loss_sum(logits, tokens["labels"], mask, None) / mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        seconds += time.perf_counter() - start
        losses.append(float(loss.detach()))
    late = sum(losses[-5:]) / 5
    assert late <= 0.5 * losses[0], f"loss {losses[0]:.3f} -> {late:.3f} (mean of the last 5 steps)"
    assert seconds / STEPS < 1.0, f"{seconds / STEPS:.3f} s per step of global batch {BATCH}"
