"""`make demo`: train tiny-vlm on the digits task with the recipe in topologies/demo.yaml, then check it.

0. the digits task as a LLaVA-format dataset under runs/demo-data/ (PNG images, JSONL conversations, an
   HF tokenizer: data/demo_data.py), written on the first run and reused later; `--prepare-only` stops
   here, for a user who then runs the train command below alone;
1. `mimo-run train topologies/demo.yaml --eval-every 50 ...` (images on 2 data-parallel ranks ->
   language on 2 tensor-parallel ranks, 4 local processes), with progress, held-out evaluation,
   checkpoints and a trace: exactly what a user types, so the file alone reproduces the demo;
2. the same model, data and batches colocated on 1 process (the reference), for the first
   COMPARE_STEPS steps of the same lr schedule: the two runs sum in different orders, so their float
   rounding differs by ~1e-7 and, as in any two such runs, the difference compounds over hundreds of
   steps;
3. final held-out caption accuracy, the per-step loss difference of the two runs, the median step
   time of each over the same steps, and the timeline picture of the last step, under runs/demo/.
"""

import json
import os
import shutil
import statistics
import sys
import time
from typing import Dict, List, Optional

TOPOLOGY = "topologies/demo.yaml"
OUT = "runs/demo"
EVAL_EVERY = 50
COMPARE_STEPS = 50
TARGET = 0.90

HETERO = ["train", TOPOLOGY, "--eval-every", str(EVAL_EVERY), "--metrics", f"{OUT}/metrics.jsonl",
          "--trace", f"{OUT}/trace.json", "--checkpoint-dir", f"{OUT}/checkpoints", "--save-every", "100",
          "--keep-last", "2"]


def colocated_args(steps: int) -> List[str]:
    # --steps would also shorten the lr schedule (it follows the run's length); keep the full-length
    # schedule so both runs take the same steps
    return ["train", TOPOLOGY, "--colocated", "--steps", str(COMPARE_STEPS), "--metrics", f"{OUT}/colocated.jsonl",
            "--set", f"train.optimizer.decay_steps={steps}"]


def read_metrics(path: str) -> List[Dict]:
    by_step: Dict[int, Dict] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            by_step[record["step"]] = record  # a repeated step's last record counts
    return [by_step[s] for s in sorted(by_step)]


def mimo_run(argv: List[str]) -> None:
    from mimo_runtime.launch.cli import main

    code = main(argv)
    if code:
        sys.exit(code)


def draw_timeline(trace: str, png: str, steps: int) -> None:
    from mimo_runtime.launch.commands import timeline

    events, labels = timeline.load_events(trace)
    chosen = timeline.select(events, "last", "train", trace)
    timeline.draw(chosen, labels, png, f"{TOPOLOGY}: training step {steps} on 4 ranks (white = idle: bubbles)")


def prepare_data(say) -> None:
    from mimo_runtime.data import demo_data

    t0 = time.time()
    if demo_data.prepare():
        say(f"[0/3] wrote the digits task in LLaVA format to {demo_data.DEFAULT_DIR}/ in {time.time() - t0:.0f} s "
            f"(images/*.png, train.jsonl, heldout.jsonl, tokenizer/)")
    else:
        say(f"[0/3] reusing the LLaVA-format dataset in {demo_data.DEFAULT_DIR}/")


def main(argv: Optional[List[str]] = None) -> int:
    from mimo_runtime.topology import load_topology

    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--prepare-only"]):
        print("usage: python -m mimo_runtime.launch.demo [--prepare-only]", file=sys.stderr)
        return 2
    say = lambda text: print(text, flush=True)  # noqa: E731 - progress goes to stderr, results to stdout
    prepare_data(say)
    if argv:
        return 0
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    topo = load_topology(TOPOLOGY)
    t = topo.train
    say(f"demo: tiny-vlm on the digits task (LLaVA format), {TOPOLOGY} (images dp2 -> language tp2, 4 processes)")
    say(f"      {t.steps} steps of {t.global_batch} samples, lr {t.lr} (images {topo.modules['images'].optimizer.lr}), "
        f"warm-up + cosine; held-out eval every {EVAL_EVERY} steps")
    t0 = time.time()
    say(f"[1/3] heterogeneous run: mimo-run {' '.join(HETERO)}")
    mimo_run(HETERO)
    t1 = time.time()
    say(f"[2/3] colocated reference: the same model, data and batches on 1 process, {COMPARE_STEPS} steps")
    mimo_run(colocated_args(t.steps))
    t2 = time.time()
    say("[3/3] timeline")
    draw_timeline(f"{OUT}/trace.json", f"{OUT}/timeline.png", t.steps)
    hetero, colocated = read_metrics(f"{OUT}/metrics.jsonl"), read_metrics(f"{OUT}/colocated.jsonl")
    final = hetero[-1]
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(hetero, colocated)]
    n = len(diffs)
    # like with like: the median step of each run over the same steps (evaluation and start-up left out)
    hetero_step = statistics.median(r["step_time_s"] for r in hetero[:n])
    colocated_step = statistics.median(r["step_time_s"] for r in colocated[:n])
    summary = {"caption_accuracy": final["caption_accuracy"], "eval_loss": final["eval_loss"],
               "eval_samples": final["eval_samples"], "steps": t.steps, "compared_steps": n,
               "loss_max_abs_diff": max(diffs), "loss_max_abs_diff_first_10": max(diffs[:10]),
               "hetero_step_median_s": round(hetero_step, 4), "colocated_step_median_s": round(colocated_step, 4),
               "hetero_s": round(t1 - t0, 1), "colocated_s": round(t2 - t1, 1)}
    with open(f"{OUT}/summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    say("")
    say(f"final held-out caption accuracy: {100 * final['caption_accuracy']:.1f}% of {final['eval_samples']} "
        f"samples (eval loss {final['eval_loss']:.4f})" + ("" if final["caption_accuracy"] > TARGET else
                                                             f"  -- below the {100 * TARGET:.0f}% target"))
    say(f"vs the colocated run:           per-step loss max |difference| {max(diffs):.2e} over the first "
        f"{n} steps ({max(diffs[:10]):.2e} over the first 10; loss {hetero[0]['loss']:.4f} -> "
        f"{hetero[n - 1]['loss']:.4f} -> {final['loss']:.4f} at step {t.steps})")
    say(f"median step over steps 1-{n}:   heterogeneous {hetero_step:.2f} s (4 processes), colocated "
        f"{colocated_step:.2f} s (1 process); whole runs: {t.steps} steps + evaluation in {t1 - t0:.0f} s, "
        f"{n} steps in {t2 - t1:.0f} s")
    say(f"wrote {OUT}/timeline.png, trace.json (open in ui.perfetto.dev), metrics.jsonl, checkpoints/, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
