"""The lr of each step follows the documented formulas (docs/training.md), step index 0-based."""

import math

import pytest

from mimo_runtime.topology.schema import Optimizer
from mimo_runtime.train.lr_schedule import lr_at


def section(**kw) -> Optimizer:
    base = dict(name="adamw", lr=1.0, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, momentum=0.0,
                lr_schedule="constant", warmup_steps=0, decay_steps=10, min_lr=0.0, no_weight_decay=())
    return Optimizer(**dict(base, **kw))


def test_constant_is_the_peak_lr_at_every_step():
    assert [lr_at(section(lr=0.3), s) for s in (0, 5, 100)] == [0.3, 0.3, 0.3]


def test_warmup_rises_linearly_and_reaches_the_peak_on_its_last_step():
    opt = section(lr_schedule="warmup_cosine", warmup_steps=4, decay_steps=8)
    assert [lr_at(opt, s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_cosine_decays_from_peak_to_min_lr_at_decay_steps_then_stays():
    opt = section(lr=2.0, min_lr=0.5, lr_schedule="warmup_cosine", warmup_steps=2, decay_steps=6)
    # progress = (s - 2) / 4 after warm-up
    want = [0.5 + 1.5 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in range(2, 7)]
    assert [lr_at(opt, s) for s in range(2, 7)] == pytest.approx(want)
    assert lr_at(opt, 2) == pytest.approx(2.0) and lr_at(opt, 4) == pytest.approx(1.25)
    assert lr_at(opt, 6) == pytest.approx(0.5) and lr_at(opt, 50) == pytest.approx(0.5)


def test_linear_decays_by_equal_steps_to_min_lr():
    opt = section(lr=1.0, min_lr=0.2, lr_schedule="warmup_linear", warmup_steps=0, decay_steps=4)
    assert [lr_at(opt, s) for s in range(6)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_decay_that_ends_with_warmup_jumps_to_min_lr():
    opt = section(lr=1.0, min_lr=0.1, lr_schedule="warmup_linear", warmup_steps=3, decay_steps=3)
    assert [lr_at(opt, s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.1, 0.1])
