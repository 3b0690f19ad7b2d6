"""`mimo-run schedule` on interleaved and zero-bubble topologies: chunks and W shown, `--json` adds
`kinds`, `chunks` and `bubble`; a schedule that cannot run the topology's chunks is one error line."""

import json

import pytest

from mimo_runtime.launch.cli import main

TOPOLOGY = """
model: tiny-vlm-8
modules:
  images:   {kind: encoder, ranks: 4, parallel: {dp: 2, pp: 2, vpp: 2}}
  language: {kind: language, ranks: 4, parallel: {tp: 2, pp: 2, vpp: 2}}
train: {global_batch: 8, micro_batch: 2, schedule: interleaved_1f1b}
"""


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "vpp.yaml"
    path.write_text(TOPOLOGY)
    return str(path)


def test_the_grid_and_the_timeline_show_chunks(topology, capsys):
    assert main(["schedule", topology]) == 0
    out = capsys.readouterr().out
    assert "interleaved_1f1b schedule, 4 microbatches, 4 stage nodes" in out
    assert "images.1    ranks 2-3  RECV_F0<images.0 F0 SEND_F0>images.0c1 " in out
    assert "c1:SEND_F0>language.0" in out  # the encoder's last virtual stage feeds the language model
    assert "virtual stages per rank: images=2, language=2" in out
    timeline = out.split("\n\n")[1]
    assert "c1:F0" in timeline and "c1:B3" in timeline


def test_json_adds_kinds_chunks_and_the_bubble(topology, capsys):
    assert main(["schedule", topology, "--json"]) == 0
    inter = json.loads(capsys.readouterr().out)
    assert inter["kinds"] == ["B", "F", "OPT_STEP", "RECV_B", "RECV_F", "REDUCE_GRADS", "SEND_B", "SEND_F"]
    assert inter["chunks"] == {"images": 2, "language": 2}
    assert inter["deadlock_free_async"] and inter["deadlock_free_nccl"]
    assert main(["schedule", topology, "--json", "--schedule", "zero_bubble"]) == 0
    zb = json.loads(capsys.readouterr().out)
    assert "W" in zb["kinds"] and zb["deadlock_free_nccl"]
    assert "language.0c1:W0" in zb["lists"]["language.0"]
    assert main(["schedule", topology, "--json", "--schedule", "gpipe"]) == 0
    gpipe = json.loads(capsys.readouterr().out)
    # m == pp: megatron runs every forward first, so interleaved equals GPipe here; both beat 1F1B at vpp 1
    assert zb["bubble"] < inter["bubble"] == gpipe["bubble"]
    assert main(["schedule", topology, "--json", "--set", "modules.images.parallel.vpp=1", "--set",
                 "modules.language.parallel.vpp=1", "--set", "train.schedule=1f1b"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["chunks"] == {"images": 1, "language": 1} and plain["kinds"] == inter["kinds"]
    assert inter["bubble"] < plain["bubble"] == pytest.approx(3 / 7)  # (p-1)/(m+p-1), p = 4 stage hops


def test_1f1b_on_a_chunked_topology_is_one_error_line(topology, capsys):
    assert main(["schedule", topology, "--schedule", "1f1b"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: --schedule: modules ['images', 'language'] have vpp > 1: 1f1b runs one chunk per rank; use "
        "interleaved_1f1b, zero_bubble or gpipe"]


def test_the_timeline_labels_chunks_and_counts_w_as_compute():
    from mimo_runtime.launch.commands.timeline import COLORS, busy_fractions, label

    def event(action, kind, ts, dur):
        return {"name": action.split(":")[1], "ph": "X", "ts": ts, "dur": dur, "pid": 0,
                "args": {"action": action, "kind": kind, "step": 0, "phase": "train"}}

    events = [event("language.0c1:F3", "F", 0, 10), event("language.0c1:W3", "W", 10, 5),
              event("language.0:RECV_B3<language.1", "RECV_B", 15, 5)]
    assert [label(e) for e in events[:2]] == ["c1:F3", "c1:W3"]
    assert busy_fractions(events) == {0: pytest.approx(15 / 20)}
    assert "W" in COLORS
