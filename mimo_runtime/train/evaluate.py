"""Held-out evaluation with the forward-only schedule: loss and caption accuracy.

The held-out split gets its own feeder (same plan, unshuffled sampler, so every evaluation sees
the same batches); the runtime's compute reads it for the duration of the evaluation, so the
bridge, the encoders and the language model run exactly as in training, minus the backward.
The loss is token-weighted over all evaluated batches; a caption counts as correct when every
caption token is the full-vocabulary argmax (mimo_compute counts them on the last stage).
"""

from typing import Dict

import torch
import torch.distributed as dist

from mimo_runtime.train.feed import Feeder
from mimo_runtime.train.optim import loss_share

HELD_OUT = "heldout"


def held_out_feeder(rt) -> Feeder:
    from mimo_runtime.data.factory import open_dataset

    return rt.make_feeder(open_dataset(rt.topology, HELD_OUT, rt.cfg.seed, rt.rank, rt.model_facts()[1]),
                          shuffle=False)


def num_batches(feeder: Feeder, wanted: int) -> int:
    """Whole global batches of the split (at least one), at most `wanted` when it is > 0."""
    whole = max(1, len(feeder.dataset) // feeder.sampler.global_batch)
    return min(whole, wanted) if wanted > 0 else whole


def evaluate(rt, feeder: Feeder, batches: int) -> Dict[str, float]:
    """Collective: {'eval_loss', 'caption_accuracy', 'eval_samples'} over `batches` held-out batches."""
    compute = rt.executor.compute
    train_feeder = compute.feeder
    compute.feeder, compute.caption_counts = feeder, [0, 0]
    weighted, tokens = 0.0, 0
    try:
        for b in range(batches):
            weighted += rt.eval_step(b) * compute.loss_tokens  # the batch's masked tokens (begin_step)
            tokens += compute.loss_tokens
    finally:
        compute.feeder = train_feeder
    correct, total = (loss_share(rt.plan, rt.rank, float(c)) for c in compute.caption_counts)
    buf = torch.tensor([correct, total], dtype=torch.float64, device=compute.device)
    dist.all_reduce(buf)
    return {"eval_loss": weighted / max(tokens, 1),
            "caption_accuracy": float(buf[0] / buf[1]) if buf[1] > 0 else 0.0,
            "eval_samples": batches * feeder.sampler.global_batch}
