"""Every way a factory can be wrong is one line naming the topology field and the import path.

In-process: a factory is called before any collective, with a context whose groups are None
(specs are data; nothing is built).
"""

import subprocess
import sys

import pytest

from mimo_runtime.errors import TopologyError
from mimo_runtime.factories import preflight, resolve
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict
from tests.factories.user_runs import HETERO, MODEL_ARGS, MODULE, user_module_dir, user_topology

IMAGES_AND_AUDIO = {"images": {"kind": "encoder"}, "audio": {"kind": "encoder"}, "language": {"kind": "language"}}


def _config_of(topo):
    from mimo_runtime.model.factory import BuildContext, model_config

    plan = make_plan(topo)
    none = {n: None for n in plan.modules}
    return model_config(BuildContext(plan, 0, 0, none, none))


def _with_model(factory: str, modules=HETERO):
    user_module_dir()
    return topology_from_dict({"model": {"factory": factory, "args": MODEL_ARGS}, "modules": modules,
                               "train": {"global_batch": 8, "micro_batch": 2}}, source="t.yaml")


@pytest.mark.parametrize("text", ["acme", "acme.mod", "acme:", ":build", "acme:build:x", "acme mod:f", "1pkg:f"])
def test_factory_string_form_is_checked_when_the_file_loads(text):
    with pytest.raises(TopologyError, match=r"^t\.yaml: model\.factory: expected 'package\.module:function'"):
        topology_from_dict({"model": {"factory": text}, "modules": HETERO}, source="t.yaml")
    with pytest.raises(TopologyError, match=r"^t\.yaml: data\.factory: expected"):
        topology_from_dict({"data": {"factory": text}, "modules": HETERO}, source="t.yaml")


def test_loading_a_factory_topology_imports_neither_torch_nor_the_users_code(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("model: {factory: 'no_such_pkg_q7.models:build', args: {hidden: 8}}\n"
                    "data: {factory: 'no_such_pkg_q7.data:build', workers: 2}\n"
                    "modules: {images: {kind: encoder}, language: {kind: language}}\n")
    code = ("import sys; from mimo_runtime.topology import load_topology; t = load_topology(sys.argv[1]); "
            "assert t.model.args == {'hidden': 8} and t.data.workers == 2, t; "
            "assert 'torch' not in sys.modules and 'no_such_pkg_q7' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def test_missing_module_names_field_path_and_pythonpath():
    with pytest.raises(TopologyError) as e:
        resolve("t.yaml", "model.factory", "no_such_pkg_q7.models:build")
    assert str(e.value).startswith("t.yaml: model.factory: cannot import 'no_such_pkg_q7.models' for "
                                   "no_such_pkg_q7.models:build")
    assert "PYTHONPATH" in str(e.value) and "\n" not in str(e.value)


def test_missing_function_and_non_function():
    user_module_dir()
    with pytest.raises(TopologyError, match=rf"^t\.yaml: data\.factory: module '{MODULE}' has no attribute 'nope' "
                                            rf"\(from {MODULE}:nope\)$"):
        resolve("t.yaml", "data.factory", f"{MODULE}:nope")
    with pytest.raises(TopologyError, match=rf"^t\.yaml: model\.factory: {MODULE}:NOT_CALLABLE is a int, not a function$"):
        resolve("t.yaml", "model.factory", f"{MODULE}:NOT_CALLABLE")


def test_a_failing_import_inside_the_users_module_is_reported_as_such(tmp_path, monkeypatch):
    (tmp_path / "broken_q7.py").write_text("import no_such_dependency_q7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TopologyError, match=r"^t\.yaml: model\.factory: importing 'broken_q7' for broken_q7:build "
                                            r"failed: ModuleNotFoundError: No module named 'no_such_dependency_q7'$"):
        resolve("t.yaml", "model.factory", "broken_q7:build")


def test_model_factory_must_return_a_mimo_model_config():
    with pytest.raises(TopologyError, match=rf"^t\.yaml: model\.factory: {MODULE}:not_a_config returned a "
                                            r"builtins\.dict; it must return a mimo_runtime\.model\.MimoModelConfig$"):
        _config_of(_with_model(f"{MODULE}:not_a_config"))


def test_model_factory_encoders_must_match_the_topology():
    with pytest.raises(TopologyError, match=rf"^t\.yaml: model\.factory: {MODULE}:build_model built encoders "
                                            r"\['images'\] but the topology's encoder modules are \['audio', 'images'\]"):
        _config_of(_with_model(f"{MODULE}:build_model", IMAGES_AND_AUDIO))


def test_a_good_factory_gets_the_grid_map_filled_in():
    config = _config_of(_with_model(f"{MODULE}:build_model"))
    assert set(config.module_to_grid_map) == {"images", "language"} and config.tokens_per_item == {"images": 4}


def test_data_factory_must_return_a_dataset():
    from mimo_runtime.data.factory import open_dataset

    topo = user_topology(HETERO)
    bad = topology_from_dict({"model": {"factory": f"{MODULE}:build_model"}, "modules": HETERO,
                              "data": {"factory": f"{MODULE}:not_a_dataset"}}, source="t.yaml")
    with pytest.raises(TopologyError, match=rf"^t\.yaml: data\.factory: {MODULE}:not_a_dataset returned a "
                                            r"builtins\.int for split 'train'; it must return a dataset"):
        open_dataset(bad, "train", 0, 0)
    assert len(open_dataset(topo, "heldout", 0, 0)) == 64  # the factory sees the split


def test_a_sample_without_a_modality_the_topology_expects():
    from mimo_runtime.data.factory import open_dataset

    topo = user_topology(IMAGES_AND_AUDIO)
    data = open_dataset(topo, "train", 0, 0)
    assert data.num_items(1, "images") >= 0
    with pytest.raises(TopologyError, match=rf"^<acme>: data\.factory: {MODULE}:build_data: sample 1 has no "
                                            r"modality_inputs\['audio'\] \(it has: images\); the topology has an "
                                            r"encoder 'audio'"):
        data.modality(1, "audio")


def test_a_factory_model_without_data_is_stopped_before_ranks_start():
    topo = _with_model(f"{MODULE}:build_model")
    with pytest.raises(TopologyError, match=r"^t\.yaml: data: the model comes from a factory, so the data must too"):
        preflight(topo)
    preflight(topo, needs_data=False)  # a custom loop may pass its own batches


def test_cli_reports_a_bad_factory_in_one_line_without_starting_ranks(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("model: {factory: 'no_such_pkg_q7.models:build'}\n"
                    "data: {factory: 'no_such_pkg_q7.data:build'}\n"
                    "modules: {images: {kind: encoder}, language: {kind: language}}\n")
    out = subprocess.run([sys.executable, "-m", "mimo_runtime.launch", "train", str(path), "--steps", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {path}: model.factory: cannot import 'no_such_pkg_q7.models'"), out.stderr
    assert "Traceback" not in out.stderr
