"""`parallel.vpp` and the interleaved / zero-bubble schedule kinds: accepted, carried on the Plan,
and their mistakes reported with the file's other mistakes, one `error:` line each."""

import subprocess
import sys
from pathlib import Path

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict

MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))


def topo(language, images=None, **train):
    modules = {"language": dict(kind="language", **language)}
    if images is not None:
        modules = {"images": dict(kind="encoder", **images), **modules}
    return topology_from_dict({"model": "tiny-vlm-8" if images is not None else "tiny-lm-8",
                               "modules": modules, "train": train}, "t.yaml")


@pytest.mark.parametrize("schedule", ["interleaved_1f1b", "zero_bubble", "gpipe"])
def test_vpp_is_carried_on_the_plan(schedule):
    t = topo({"parallel": {"pp": 4, "vpp": 2}}, {"parallel": {"pp": 2, "vpp": 2}}, global_batch=8, micro_batch=2,
             schedule=schedule)
    plan = make_plan(t)
    assert plan.modules["language"].vpp == 2 and plan.modules["images"].vpp == 2
    assert [plan.modules["language"].virtual_stage(p, c) for c in range(2) for p in range(4)] == list(range(8))


def test_vpp_defaults_to_one_and_zero_bubble_runs_without_it():
    plan = make_plan(topo({"parallel": {"pp": 2}}, schedule="zero_bubble"))
    assert plan.modules["language"].vpp == 1


def test_every_vpp_mistake_is_reported_at_once(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "model: tiny-vlm-8\n"
        "modules:\n"
        "  images: {kind: encoder, parallel: {vpp: 2}}\n"
        "  language: {kind: language, parallel: {pp: 4, vpp: 4}}\n"
        "train: {global_batch: 6, micro_batch: 2}\n")
    proc = subprocess.run([MIMO_RUN, "plan", "t.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "error: t.yaml: modules.images.parallel.vpp: vpp=2 needs pp > 1 (chunk c of stage p is virtual stage c * pp + p)",
        "error: t.yaml: modules.images.parallel.vpp: vpp=2 needs train.schedule interleaved_1f1b, zero_bubble or "
        "gpipe (got 1f1b)",
        "error: t.yaml: modules.language.parallel.vpp: vpp * pp = 4 * 4 = 16 does not divide the 8 layers of module "
        "'language'",
        "error: t.yaml: modules.language.parallel.vpp: vpp=4 needs train.schedule interleaved_1f1b, zero_bubble or "
        "gpipe (got 1f1b)",
        "error: t.yaml: train.global_batch: 3 microbatches per step (global_batch / (micro_batch x language dp)) is "
        "not a multiple of pp=4 of module 'language' with vpp=4 (megatron's interleaving runs microbatches in groups "
        "of pp per virtual stage)",
    ]


@pytest.mark.parametrize("bad, field", [({"vpp": 0, "pp": 2}, "modules.language.parallel.vpp"),
                                        ({"vpp": "two", "pp": 2}, "modules.language.parallel.vpp")])
def test_vpp_must_be_a_positive_integer(bad, field):
    with pytest.raises(TopologyError) as err:
        topo({"parallel": bad}, schedule="interleaved_1f1b")
    assert err.value.field == field


def test_hf_layers_bound_vpp(tmp_path):
    import json
    d = tmp_path / "lm"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 64, "num_hidden_layers": 6, "hidden_size": 64, "intermediate_size": 96}))
    raw = {"model": {"hf": str(d)}, "modules": {"language": {"kind": "language", "parallel": {"pp": 2, "vpp": 2}}},
           "train": {"schedule": "interleaved_1f1b", "global_batch": 4, "micro_batch": 2}}
    with pytest.raises(TopologyError) as err:
        topology_from_dict(raw, "t.yaml")
    assert err.value.line() == ("error: t.yaml: modules.language.parallel.vpp: vpp * pp = 2 * 2 = 4 does not divide "
                                "the 6 layers of module 'language'")
    raw["modules"]["language"]["parallel"]["pp"] = 3
    raw["train"]["global_batch"] = 6
    assert make_plan(topology_from_dict(raw, "t.yaml")).modules["language"].vpp == 2
