"""Context parallelism, sequence parallelism and packed sequences train exactly like the colocated
single-process model (per-step losses, step-1 gradients), on real gloo processes."""

import pytest

from tests.train.equivalence import assert_matches_reference, reference, run, topology

ENC = {"kind": "encoder"}
LANG = {"kind": "language"}

SHAPES = {
    "llm_cp2": ({"images": {**ENC, "ranks": 1}, "language": {**LANG, "parallel": {"cp": 2}}}, {}),
    "llm_tp2_cp2_encoder_dp2": ({"images": {**ENC, "parallel": {"dp": 2}},
                                 "language": {**LANG, "parallel": {"tp": 2, "cp": 2}}}, {}),
    "llm_tp2_sequence_parallel": ({"images": {**ENC, "ranks": 1},
                                   "language": {**LANG, "parallel": {"tp": 2}, "sequence_parallel": True}}, {}),
    "packed_llm_pp2": ({"images": {**ENC, "ranks": 1}, "language": {**LANG, "parallel": {"pp": 2}}},
                       {"packing": True}),
    # packing with cp works: each sequence is padded to 2*cp and cut on its own
    "packed_llm_cp2": ({"images": {**ENC, "ranks": 1}, "language": {**LANG, "parallel": {"cp": 2}}},
                       {"packing": True}),
    # colocated: the encoder (dp2) and the language model (cp2) share 2 ranks; rows move in-process
    "colocated_encoder_dp2_llm_cp2": ({"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                                       "language": {**LANG, "parallel": {"cp": 2}}}, {"placement": "colocated"}),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_colocated(shape):
    modules, train = SHAPES[shape]
    train = dict(train)
    topo = topology("tiny-vlm", modules, train.pop("placement", "separate"), **train)
    # the reference is the unpacked colocated run: packing must not change what the model computes
    assert_matches_reference(topo, run(topo), reference(topology("tiny-vlm", modules)))
