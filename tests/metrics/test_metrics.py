"""Per-step metrics, held-out evaluation, progress output, the Chrome trace and its timeline picture."""

import functools
import io
import json
import os

import pytest

from mimo_runtime.launch.cli import main
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.train.metrics import Reporter, format_line
from tests.checkpoint import runs

RECORD = {"step": 2, "loss": 1.5, "grad_norm": 0.5, "step_time_s": 0.25, "lr": 1e-3, "tokens_per_s": 1024.0,
          "module_time_s": {"images": 0.01, "language": 0.1}}


@functools.lru_cache(maxsize=None)
def two_rank_checks():
    """One 2-rank launch for the captions, clock-order and skipped-step scenarios (tests/metrics/rank_fns.py)."""
    from tests.metrics.rank_fns import two_rank_checks as checks

    return spawn(checks, 2, timeout_s=300, collective_timeout_s=30)


def records():
    runs.from_a()
    with open(runs.path("a.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_metrics_jsonl_has_one_record_per_step_with_module_times():
    got = records()
    assert [r["step"] for r in got] == [1, 2, 3]
    for r in got:
        assert {"step", "loss", "grad_norm", "lr", "tokens_per_s", "step_time_s", "module_time_s"} <= r.keys()
        assert set(r["module_time_s"]) == {"images", "language"} and min(r["module_time_s"].values()) > 0
        assert r["tokens_per_s"] == pytest.approx(8 * 32 / r["step_time_s"])
        assert r["activation_peak_mb"] > 0  # train/memory.py: the busiest rank's saved activations
    assert [r["loss"] for r in got] == runs.losses(runs.from_a())


def test_metrics_have_model_flops_mfu_memory_bubble_and_per_module_grad_norms():
    from mimo_runtime.data import make_dataset
    from mimo_runtime.train.flops import preset_step_flops
    from mimo_runtime.train.sampler import Sampler

    data = make_dataset("tiny-vlm", "train", runs.SEED)
    sampler = Sampler(len(data), 8, 2, runs.SEED)  # language dp1: microbatches of 2
    for step, r in enumerate(records()):
        ids = sampler.step_samples(step)
        flops = preset_step_flops("tiny-vlm", 8, {"images": sum(data.num_items(i, "images") for i in ids)},
                                  {"images": False})
        t = r["step_time_s"]
        assert r["tflops_per_s"] == pytest.approx({**{n: f / t / 1e12 for n, f in flops.items()},
                                                   "all": sum(flops.values()) / t / 1e12}, rel=1e-6)
        assert r["mfu"]["language"] == pytest.approx(flops["language"] / t / (2 * 1e12), rel=1e-6)  # 2 ranks, 1 TFLOP/s
        assert r["mfu"]["all"] == pytest.approx(sum(flops.values()) / t / (4 * 1e12), rel=1e-6)
        assert 0 < r["nonpad_tokens_per_s"] < r["tokens_per_s"]
        assert len(r["peak_memory_mb"]) == 4 and min(r["peak_memory_mb"]) > 50  # torch + megatron alone
        assert 0.0 < r["bubble"] < 1.0
        assert set(r["grad_norm_by_module"]) == {"images", "language"}
        assert r["grad_norm"] == pytest.approx(sum(v * v for v in r["grad_norm_by_module"].values()) ** 0.5)
        assert r["skipped_steps"] == 0


def test_evaluation_every_k_steps_and_after_the_last():
    got = records()
    assert ["eval_loss" in r for r in got] == [False, True, True]
    for r in got[1:]:
        assert r["eval_samples"] == 16 and 0.0 <= r["caption_accuracy"] <= 1.0 and r["eval_loss"] > 0
    assert got[2]["eval_loss"] < got[1]["eval_loss"], "held-out loss follows training"


def test_caption_accuracy_gathers_the_vocab_slices_of_tensor_parallel_ranks():
    for (correct, total), full in [r["captions"] for r in two_rank_checks()]:
        assert total == 5 and correct == 3 and full == pytest.approx(3 / 5)


def test_trace_has_every_ranks_actions_on_one_clock():
    runs.from_a()
    with open(runs.path("trace.json")) as f:
        trace = json.load(f)
    events, error_us = trace["traceEvents"], trace["otherData"]["clock_error_us"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in spans} == {0, 1, 2, 3}
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names[0] == "rank 0: images stage 0" and names[3] == "rank 3: language stage 0"
    for rank in range(4):
        mine = [e for e in spans if e["pid"] == rank and e["args"]["phase"] == "train"]
        assert {e["args"]["step"] for e in mine} == {0, 1, 2}
        assert {"F", "B", "OPT_STEP"} <= {e["args"]["kind"] for e in mine}
    assert any(e["args"]["phase"] == "eval" for e in spans)
    # one clock: the language rank takes microbatch 0 in only after the encoder began sending it (a real
    # happens-before), so on the common clock it ends no earlier than that, up to both ranks' sync bounds
    send = min(e["ts"] for e in spans if e["pid"] == 0 and e["name"].startswith("SEND_F0"))
    recv_end = min(e["ts"] + e["dur"] for e in spans if e["pid"] == 2 and e["name"].startswith("RECV_F0"))
    assert error_us[0] == 0 and len(error_us) == 4
    assert recv_end + error_us[0] + error_us[2] + 0.2 >= send, (recv_end, send, error_us)  # 0.2: ts rounding


def test_a_receive_never_ends_before_its_send_began_on_the_trace_clock_in_20_trials():
    trials = two_rank_checks()[0]["order"]
    assert len(trials) == 20
    for gap, error in trials:
        assert gap + error >= 0, trials


def test_clock_mapping_bound_holds_for_any_offset_and_delays():
    import random

    from mimo_runtime.train.trace import best_offset

    rng = random.Random(0)
    for _ in range(10_000):
        true = rng.uniform(-5.0, 5.0)  # the other clock minus the reference clock
        rounds, t = [], rng.uniform(0.0, 100.0)
        for _ in range(rng.randint(1, 8)):
            there = t + rng.expovariate(1e3)  # the ping's delay, then the pong's
            back = there + rng.expovariate(1e3)
            rounds.append((t, there + true, back))
            t = back + rng.uniform(0.0, 1e-3)
        offset, error = best_offset(rounds)
        assert abs(offset - true) <= error + 1e-9
        assert error == min(b - a for a, _, b in rounds) / 2


def test_timeline_png_from_the_trace(capsys):
    runs.from_a()
    png = runs.path("timeline.png")
    assert main(["timeline", runs.path("trace.json"), "-o", png]) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert all(f"rank {r}" in out for r in range(4)) and "compute" in out


def test_timeline_of_a_file_that_is_not_a_trace_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"step": 1}')
    assert main(["timeline", str(bad), "-o", str(tmp_path / "t.png")]) == 2
    assert capsys.readouterr().err == f"error: {bad}: no traceEvents list: not a Chrome trace\n"


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path):
    out = io.StringIO()
    r = Reporter(str(tmp_path / "m.jsonl"), progress=True, out=out)
    r.start(10, 1)
    r.report(RECORD)
    r.close()
    assert out.getvalue() == format_line(RECORD, 10) + "\n"
    assert "1024 tok/s" in out.getvalue()
    assert json.loads((tmp_path / "m.jsonl").read_text()) == RECORD


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_shows_loss_and_throughput():
    out = _Terminal()
    r = Reporter(None, progress=True, out=out)
    r.start(10, 1)
    r.report(RECORD)
    r.close()
    text = out.getvalue()
    assert "2/10" in text and "loss 1.5000" in text and "1024 tok/s" in text


def test_tensorboard_logs_when_installed_and_is_one_error_line_otherwise(tmp_path, capsys):
    from mimo_runtime.train.metrics import tensorboard_available

    if tensorboard_available():
        r = Reporter(None, progress=False, tensorboard_dir=str(tmp_path / "tb"))
        r.start(10, 1)
        r.report({**RECORD, "mfu": {"language": 0.25}, "peak_memory_mb": [100.0, 200.0]})
        r.close()
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "tb"))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert {"loss", "mfu/language", "module_time_s/images", "peak_memory_mb/rank1"} <= set(scalars)
        assert [(e.step, e.value) for e in events.Scalars("mfu/language")] == [(2, 0.25)]
        return
    assert main(["train", "topologies/vlm-2rank.yaml", "--tensorboard", str(tmp_path / "tb")]) == 2
    assert capsys.readouterr().err == \
        "error: --tensorboard: the tensorboard package is not installed (pip install tensorboard)\n"


def test_a_peak_that_is_not_positive_is_one_error_line(capsys):
    assert main(["train", "topologies/vlm-2rank.yaml", "--peak-tflops", "0"]) == 2
    assert capsys.readouterr().err == "error: --peak-tflops: must be > 0, got 0.0\n"


def test_wandb_offline_writes_the_run_to_disk_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    r = Reporter(None, progress=False, wandb_project="mimo-test", wandb_dir=str(tmp_path))
    r.start(10, 1)
    r.report(RECORD)
    r.close()
    import wandb

    wandb.teardown()  # wandb's own service process writes the file: read it once that has stopped
    runs_dir = tmp_path / "wandb"
    offline = [d for d in os.listdir(runs_dir) if d.startswith("offline-run-")]
    assert len(offline) == 1
    files = os.listdir(runs_dir / offline[0])
    data = [f for f in files if f.endswith(".wandb")]
    assert data and (runs_dir / offline[0] / data[0]).stat().st_size > 0
    assert b"module_time_s/language" in (runs_dir / offline[0] / data[0]).read_bytes()

