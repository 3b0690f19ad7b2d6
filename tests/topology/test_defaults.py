"""What a topology file may leave out, and what the loader fills in."""

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology import load_topology, topology_from_dict


def vlm(images=None, language=None, **top):
    return topology_from_dict({"model": "tiny-vlm", "modules": {
        "images": {"kind": "encoder", **(images or {})},
        "language": {"kind": "language", **(language or {})}}, **top})


def test_ranks_default_to_the_product_of_parallel_sizes():
    topo = vlm(language={"parallel": {"tp": 2, "pp": 2, "dp": 2}})
    assert topo.language.ranks == 8
    assert topo.modules["images"].ranks == 1


def test_dp_defaults_to_ranks_over_tp_cp_pp():
    topo = vlm(images={"ranks": 4, "parallel": {"tp": 2}}, language={"ranks": 4, "parallel": {"cp": 2}})
    assert topo.modules["images"].parallel.dp == 2
    assert topo.language.parallel.dp == 2


def test_modules_are_placed_one_after_another_in_file_order():
    topo = topology_from_dict({"model": "tiny-vlm", "modules": {
        "language": {"kind": "language", "ranks": 2, "parallel": {"tp": 2}},
        "images": {"kind": "encoder", "ranks": 2}}})
    assert (topo.language.rank_offset, topo.modules["images"].rank_offset) == (0, 2)
    assert topo.world_size == 4


def test_explicit_rank_offsets_may_list_modules_out_of_order():
    topo = vlm(images={"ranks": 2, "rank_offset": 2}, language={"ranks": 2, "rank_offset": 0})
    assert topo.modules["images"].rank_offset == 2 and topo.world_size == 4


def test_edges_default_to_every_encoder_feeding_language():
    topo = topology_from_dict({"model": "tiny-avlm", "modules": {
        "images": {"kind": "encoder"}, "audio": {"kind": "encoder"}, "language": {"kind": "language"}}})
    assert topo.edges == (("images", "language"), ("audio", "language"))


def test_language_only_topology_is_valid():
    topo = topology_from_dict({"model": "tiny-lm", "modules": {"language": {"kind": "language"}}})
    assert topo.edges == () and topo.world_size == 1 and topo.encoders == {}


def test_encoder_modality_defaults_to_its_name():
    assert vlm().modules["images"].modality == "images"


def test_colocated_modules_all_start_at_rank_zero():
    topo = vlm(images={"ranks": 2}, language={"ranks": 2, "parallel": {"tp": 2}}, placement="colocated")
    assert {m.rank_offset for m in topo.modules.values()} == {0}
    assert topo.world_size == 2


def test_train_defaults():
    t = vlm().train
    assert (t.global_batch, t.micro_batch, t.schedule, t.lr) == (8, 2, "1f1b", 3.0e-4)


def test_frozen_encoder_and_resources_are_kept():
    m = vlm(images={"frozen": True, "resources": {"CPU": 1, "enc": 0.5}}).modules["images"]
    assert m.frozen and m.resources == {"CPU": 1.0, "enc": 0.5}


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("model: tiny-vlm\nmodules:\n"
                    "  images: &enc {kind: encoder, ranks: 2, parallel: {dp: 2}}\n"
                    "  language: {<<: *enc, kind: language}\n")
    topo = load_topology(str(path))
    assert topo.language.kind == "language" and topo.language.parallel.dp == 2


def test_errors_name_the_source_given_to_topology_from_dict():
    with pytest.raises(TopologyError, match=r"^inline: modules.images.parallel.tp: must be positive, got 0$"):
        topology_from_dict({"model": "tiny-vlm", "modules": {
            "images": {"kind": "encoder", "parallel": {"tp": 0}}, "language": {"kind": "language"}}}, "inline")
