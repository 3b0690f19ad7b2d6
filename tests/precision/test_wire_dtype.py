"""Which dtype a message travels in (train/precision.py wire_dtype): bf16 only when every module on
both sides computes in bf16; fp32 everywhere else, so fp32 runs send exactly what they did."""

import itertools

import pytest
import torch

from mimo_runtime.plan import make_plan
from mimo_runtime.train.precision import wire_dtype
from tests.train.equivalence import topology

PRECISIONS = (None, "fp32", "bf16")


def _plan(default, images, audio, language):
    modules = {"images": {"kind": "encoder", "ranks": 1}, "audio": {"kind": "encoder", "ranks": 1},
               "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2}}}
    for name, p in (("images", images), ("audio", audio), ("language", language)):
        if p is not None:
            modules[name]["precision"] = p
    return make_plan(topology("tiny-avlm", modules, precision=default))


@pytest.mark.parametrize("default", ["fp32", "bf16"])
def test_wire_dtype_is_bf16_exactly_when_every_module_of_the_message_computes_in_bf16(default):
    for images, audio, language in itertools.product(PRECISIONS, repeat=3):
        plan = _plan(default, images, audio, language)
        effective = {n: (p or default) for n, p in (("images", images), ("audio", audio), ("language", language))}
        for pair in [("language",), ("images",), ("images", "language"), ("audio", "language"),
                     ("language", "audio"), ("images", "audio", "language")]:
            want = torch.bfloat16 if all(effective[n] == "bf16" for n in pair) else torch.float32
            assert wire_dtype(plan, pair) == want, (default, effective, pair)


def test_wire_dtype_falls_back_to_the_parameters_dtype():
    plan = _plan("fp32", None, None, None)
    assert wire_dtype(plan, ["language"], torch.float64) == torch.float64
    assert wire_dtype(_plan("bf16", None, None, None), ["language"], torch.float64) == torch.bfloat16
