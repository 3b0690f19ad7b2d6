"""Freeze patterns: what a glob matches, the typo check, and when an encoder counts as frozen
entirely (pure: a parameter census is plain data)."""

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict
from mimo_runtime.train.freeze import check_freeze_patterns, entirely_frozen
from mimo_runtime.train.params import matches

ENC = "modality_submodules.images.encoders.digits_vit."
PROJ = "modality_submodules.images.input_projections.0.encoder.linear_fc1.weight"


def plan(freeze=(), frozen=False):
    return make_plan(topology_from_dict({"model": "tiny-vlm", "modules": {
        "images": {"kind": "encoder", "freeze": list(freeze), "frozen": frozen},
        "language": {"kind": "language"}}}, source="t.yaml"))


def census(trainable_proj: bool):
    return {"images": {ENC + "block.layers.0.mlp.linear_fc1.weight": (False, (128, 32)),
                       ENC + "pos_embed": (False, (4, 32)), PROJ: (trainable_proj, (64, 32))},
            "language": {"language_model.embedding.word_embeddings.weight": (True, (64, 64))}}


@pytest.mark.parametrize("pattern, hit", [
    ("encoders.*", True), ("encoders.*.layers.0.*", True), (ENC + "*", True), ("*linear_fc1*", True),
    ("layers.0.*", False), ("encoders.*.layers.1.*", False), ("input_projections.*", False)])
def test_patterns_match_names_relative_to_the_module_or_in_full(pattern, hit):
    assert matches(ENC + "block.layers.0.mlp.linear_fc1.weight", "images", [pattern]) is hit


def test_language_patterns_are_relative_to_the_language_model():
    assert matches("language_model.decoder.layers.3.mlp.linear_fc2.bias", "language", ["decoder.layers.3.*"])
    assert not matches("language_model.decoder.layers.3.mlp.linear_fc2.bias", "language", ["layers.3.*"])


def test_a_pattern_that_matches_nothing_is_an_error_showing_a_real_name():
    with pytest.raises(TopologyError) as e:
        check_freeze_patterns(plan(["encoders.*", "encoder.*"]), census(True))
    assert str(e.value) == ("t.yaml: modules.images.freeze[1]: 'encoder.*' matches no parameter of 'images' "
                            "(names look like 'encoders.digits_vit.block.layers.0.mlp.linear_fc1.weight')")


def test_an_encoder_is_frozen_entirely_only_when_no_parameter_trains_on_any_rank():
    assert entirely_frozen(plan(), census(trainable_proj=True)) == []
    assert entirely_frozen(plan(), census(trainable_proj=False)) == ["images"]
