"""`mimo-run train --schedule KIND` takes every schedule kind and is checked as `train.schedule` in the file is:
a schedule that cannot run the topology's chunks is one error line before any rank starts."""

from mimo_runtime.launch.cli import build_parser, main
from mimo_runtime.launch.commands.train import run_config, run_overrides
from mimo_runtime.topology import load_topology

CHUNKED = """
model: tiny-vlm-8
modules:
  images:   {kind: encoder, ranks: 2, parallel: {pp: 2}}
  language: {kind: language, ranks: 2, parallel: {pp: 2, vpp: 2}}
train: {global_batch: 4, micro_batch: 2, schedule: interleaved_1f1b, device: cpu}
"""


def _config(path, *flags):
    args = build_parser().parse_args(["train", str(path), *flags])
    return run_config(args, load_topology(str(path), run_overrides(args)))


def test_every_kind_reaches_the_run_config(tmp_path):
    path = tmp_path / "vpp.yaml"
    path.write_text(CHUNKED)
    assert _config(path).schedule == "interleaved_1f1b"
    for kind in ("zero_bubble", "gpipe", "interleaved_1f1b"):
        assert _config(path, "--schedule", kind).schedule == kind
    plain = tmp_path / "plain.yaml"
    plain.write_text(CHUNKED.replace("vpp: 2", "vpp: 1").replace("interleaved_1f1b", "1f1b"))
    assert _config(plain, "--schedule", "zero_bubble").schedule == "zero_bubble"  # ZB-H1 at vpp 1


def test_a_schedule_that_cannot_run_the_chunks_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "vpp.yaml"
    path.write_text(CHUNKED)
    assert main(["train", str(path), "--schedule", "1f1b"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {path}: modules.language.parallel.vpp: vpp=2 needs train.schedule interleaved_1f1b, zero_bubble "
        "or gpipe (got 1f1b)"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(CHUNKED.replace("vpp: 2", "vpp: 1").replace("interleaved_1f1b", "1f1b"))
    assert main(["train", str(plain), "--schedule", "interleaved_1f1b"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --schedule: interleaved_1f1b needs a module with parallel.vpp > 1"]
