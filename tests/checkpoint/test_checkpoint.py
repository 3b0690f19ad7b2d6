"""Checkpoints resume exactly, reshard across topologies, survive a crash mid-save, and fail clearly.

The runs are described in runs.py; each is launched once on real processes and shared.
"""

import json
import os

import torch

from tests.checkpoint import runs


def full_tensors(ckpt: str):
    """{key: full tensor} of a checkpoint, read in this (non-distributed) process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    parent, name = os.path.split(ckpt.rstrip("/"))
    out = os.path.join(runs.workdir(), f"{os.path.basename(parent)}-{name}.pt")
    dcp_to_torch_save(ckpt, out)
    return torch.load(out)


def close(got, want) -> None:
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=0)


def test_train_6_equals_train_3_stop_resume_3_losses_and_parameters():
    full, half, rest = runs.uninterrupted(), runs.first_half(), runs.resumed()
    assert rest[0].start_step == 3
    assert runs.losses(half) + runs.losses(rest) == runs.losses(full)  # bit-identical, every step
    a = full_tensors(runs.path("full", "step_00000006"))
    b = full_tensors(runs.path("half", "step_00000006"))
    assert a.keys() == b.keys()
    assert any(k.endswith(".exp_avg_sq") for k in a), "optimizer moments are saved"
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"final parameters / optimizer state differ: {different[:3]}"


def test_llm_tp2_encoder_dp2_checkpoint_resumes_colocated_on_one_rank():
    full, a = runs.uninterrupted(), runs.from_a()
    close(runs.losses(a), runs.losses(full, 0)[:3])
    moved = runs.on_one_rank()[1][0]
    assert moved.start_step == 3
    close([m["loss"] for m in moved.metrics], runs.losses(full, 3))


def test_kill_while_saving_keeps_previous_checkpoint_latest():
    failure, latest, names = runs.crashed()
    assert "rank 2" in failure and "exit code 17" in failure, failure
    assert latest == "step_00000003"
    assert names == [".tmp-step_00000004", "latest", "step_00000003"], names  # the interrupted save stays aside
    # loadable: test_llm_pp2_checkpoint_left_by_a_crash_resumes_on_pp1 resumes from it


def test_llm_pp2_checkpoint_left_by_a_crash_resumes_on_pp1():
    full = runs.uninterrupted()
    after = runs.on_one_rank()[1][1]
    assert after.start_step == 3
    close([m["loss"] for m in after.metrics], runs.losses(full, 3))
    names = sorted(os.listdir(runs.path("crash")))
    assert names == ["latest", "step_00000003", "step_00000006"], names  # the crash's leftovers are gone


def test_keep_last_and_latest():
    runs.uninterrupted()
    root = runs.path("full")
    assert sorted(os.listdir(root)) == ["latest", "step_00000004", "step_00000006"]
    with open(os.path.join(root, "latest")) as f:
        assert f.read().strip() == "step_00000006"
    with open(os.path.join(root, "step_00000006", "mimo.json")) as f:
        meta = json.load(f)
    assert meta["step"] == 6 and meta["model"] == "tiny-vlm" and meta["seed"] == runs.SEED
    assert meta["optimizer_scalars"]["language"]["step"] == 6.0


def test_every_checkpoint_keeps_the_resolved_topology_it_was_saved_on():
    from mimo_runtime.topology import load_topology

    runs.uninterrupted()
    saved = load_topology(runs.path("full", "step_00000004", "topology.yaml"))
    assert saved.modules == runs.S.modules and saved.train == runs.S.train


def test_corrupt_or_mismatched_checkpoints_fail_with_one_clear_line():
    errors = runs.on_one_rank()[0]
    ckpt = {name: os.path.join(root, "step_00000003") for name, (root, _) in errors.items()}
    line = {name: err for name, (_, err) in errors.items()}
    assert line["wrong_model"] == \
        f"error: {ckpt['wrong_model']}: checkpoint is of model 'tiny-vlm' but this run trains 'tiny-avlm'"
    assert f"trained with seed {runs.SEED} but this run uses seed {runs.SEED + 1}" in line["wrong_seed"]
    assert line["missing_shard"].startswith(
        f"error: {ckpt['missing_shard']}: missing shard file __2_0.distcp (written by rank 2)")
    assert line["missing_shard"].endswith("on several nodes --checkpoint-dir must be storage every node shares")
    assert f"{ckpt['truncated_shard']}: shard file __3_0.distcp is truncated" in line["truncated_shard"]
    assert "checkpoint has no tensor 'modality_submodules.audio." in line["relabelled"]
    root = errors["dangling_latest"][0]
    assert line["dangling_latest"] == f"error: {root}: 'latest' names 'step_00000003', which does not exist; " \
                                      f"point it at one of no checkpoints"
    assert line["good"] is None
    assert all("\n" not in e for name, e in line.items() if name != "good")


def test_resuming_another_models_checkpoint_from_the_cli_is_one_line_exit_2(capsys):
    from mimo_runtime.launch.cli import main

    runs.uninterrupted()
    code = main(["train", "topologies/avlm-4rank.yaml", "--colocated", "--nproc", "1", "--seed", str(runs.SEED),
                 "--steps", "8", "--checkpoint-dir", runs.path("full"), "--resume", "--timeout", "30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == f"error: {runs.path('full', 'step_00000006')}: checkpoint is of model 'tiny-vlm' but this run " \
                      f"trains 'tiny-avlm'"


FC1 = "language_model.decoder.layers.mlp.linear_fc1.weight"  # layers stacked on dim 0


def test_gated_model_tp2_resumes_bit_exact_with_its_optimizer_state():
    full, rest = runs.gated(), runs.gated_resumed()
    assert rest[0].start_step == 2
    assert runs.losses(rest) == runs.losses(full, 2)  # bit-identical
    a = full_tensors(runs.path("gated", "step_00000004"))
    b = full_tensors(runs.path("gated-tp2", "step_00000004"))
    assert a.keys() == b.keys() and f"optimizer.{FC1}.exp_avg" in a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"final parameters / optimizer state differ: {different[:3]}"


def test_gated_fc1_is_saved_as_the_global_gate_then_up_tensor():
    from mimo_runtime.topology import PRESETS

    runs.gated()
    saved = full_tensors(runs.path("gated", "step_00000002"))
    lang = PRESETS["tiny-llama"].language
    assert saved[FC1].shape == (lang.layers, 2 * lang.ffn_hidden, lang.hidden)
    assert saved[f"optimizer.{FC1}.exp_avg_sq"].shape == saved[FC1].shape


def test_gated_pretrained_torch_file_loads_each_half_of_fc1_into_its_tp2_slice():
    runs.gated()
    stored = torch.load(runs.pretrained_file())
    saved = full_tensors(runs.path("gated", "step_00000002"))[FC1]  # global [gate; up] per layer
    for layer in range(saved.shape[0]):
        want = stored[f"language_model.decoder.layers.{layer}.mlp.linear_fc1.weight"]
        assert (saved[layer] - want).abs().max() < 5e-3, layer  # two Adam steps at lr 1e-3 from the file


def test_gated_model_tp2_checkpoint_resumes_on_one_rank():
    full = runs.gated()
    moved = runs.on_one_rank()[1][2]
    assert moved.start_step == 2
    close([m["loss"] for m in moved.metrics], runs.losses(full, 2))
