"""`mimo-run check` and `mimo-run params`, run as a user types them: what `plan` cannot see, no ranks.

Each subprocess builds the model once on the meta device (a few seconds, no ranks, no sockets).
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
MIMO_RUN = str(Path(sys.executable).with_name("mimo-run"))

BAD_DATA = """\
import torch


def build(args, ctx):  # samples without labels
    return [{"input_ids": torch.zeros(32, dtype=torch.long), "loss_mask": torch.ones(32)} for _ in range(8)]
"""
FACTORY_MODEL = ("model: {factory: 'tests.factories.user_code:build_model', "
                 "args: {hidden: 32, encoder_hidden: 16, heads: 4, layers: 2}}\n")


def mimo_run(cwd, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(cwd)]), GLOO_SOCKET_IFNAME="lo")
    return subprocess.run([MIMO_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_check_reports_pretrained_freeze_and_data_mistakes_of_a_factory_model_at_once(tmp_path):
    (tmp_path / "baddata.py").write_text(BAD_DATA)
    torch.save({"encoders.patch_mlp.fc.weight": torch.zeros(3, 3)}, tmp_path / "images.pt")
    (tmp_path / "t.yaml").write_text(FACTORY_MODEL + "data: {factory: 'baddata:build'}\nmodules:\n"
                                     "  images: {kind: encoder, pretrained: {path: images.pt}}\n"
                                     "  language: {kind: language, pretrained: {path: lm.pt}, freeze: ['decoder.layers.7.*']}\n")
    proc = mimo_run(tmp_path, "check", "t.yaml")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[0] == "error: t.yaml: modules.language.pretrained.path: no such file: lm.pt"
    assert lines[1] == ("error: t.yaml: modules.language.freeze[0]: 'decoder.layers.7.*' matches no parameter of "
                        "'language' (names look like 'embedding.word_embeddings.weight')")
    assert lines[2].startswith("error: t.yaml: modules.images.pretrained: images.pt: ") and "missing keys" in lines[2]
    assert lines[3] == "error: t.yaml: data.factory: baddata:build: sample 0 has no labels"
    assert len(lines) == 4 and "Traceback" not in proc.stderr
    # plan sees the cheap one (a missing file) too, and a factory module that is not on the path
    proc = mimo_run(tmp_path, "plan", "t.yaml", "--set", "data.factory=no_such_pkg_q8.data:build")
    assert proc.stderr.splitlines() == [
        "error: t.yaml: modules.language.pretrained.path: no such file: lm.pt",
        "error: --set data.factory: cannot find module 'no_such_pkg_q8.data' for no_such_pkg_q8.data:build; "
        "is its directory on PYTHONPATH?"]


def test_check_prints_parameters_and_memory_and_fails_over_the_budget():
    proc = mimo_run(ROOT, "check", "topologies/vlm-4rank.yaml", "--set", "modules.images.frozen=true",
                    "--memory-per-rank", "0.002")
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "topologies/vlm-4rank.yaml: plan, factories, model, pretrained weights, freeze patterns and data OK"
    images = next(line.split() for line in out if line.startswith("images "))
    language = next(line.split() for line in out if line.startswith("language "))
    total, trainable, frozen = (int(x.replace(",", "")) for x in images[1:4])
    assert total == trainable + frozen and 0 < trainable < frozen  # frozen: true keeps the projection trainable
    assert language[1] == language[2] and language[3] == "0"
    ranks = [line for line in out if line.lstrip().startswith("rank ")]
    assert [r.split()[2] for r in ranks] == ["images", "images", "language", "language"]
    assert proc.stderr.splitlines() == [
        f"error: --memory-per-rank: rank 2 (language) needs about {float(ranks[2].split()[-1]) / 1000:.3g} GB, "
        "more than 0.002 GB"]


def test_params_lists_canonical_names_and_full_shapes_of_one_module():
    proc = mimo_run(ROOT, "params", "topologies/vlm-4rank.yaml", "--module", "language")
    assert proc.returncode == 0, proc.stderr
    names = dict(line.split()[:2] for line in proc.stdout.splitlines())
    # tp=2 in the file; the listing is the unsharded model with global layer indices
    assert names["language_model.embedding.word_embeddings.weight"] == "64x64"
    assert names["language_model.decoder.layers.3.mlp.linear_fc1.weight"] == "256x64"
    assert all(n.startswith("language_model.") for n in names)
    proc = mimo_run(ROOT, "params", "topologies/vlm-4rank.yaml", "--module", "image")
    assert (proc.returncode, proc.stderr.splitlines()) == (2, [
        "error: --module: no module 'image' in topologies/vlm-4rank.yaml (did you mean 'images'? modules: images, language)"])
