"""`make demo`: train tiny-vlm on the digits task on the default heterogeneous topology, then check it.

1. topologies/vlm-4rank.yaml (images on 2 data-parallel ranks -> language on 2 tensor-parallel
   ranks) on 4 local processes, with progress, held-out evaluation, checkpoints and a trace;
2. the same model, data and batches colocated on 1 process (the reference), for the first
   COMPARE_STEPS steps: the two runs sum in different orders, so their float rounding differs
   by ~1e-7 and, as in any two such runs, the difference compounds over hundreds of steps;
3. final held-out caption accuracy, the per-step loss difference of the two runs, and the
   timeline picture of the last step, all under runs/demo/.

The topology file is used as is except for the training settings below: the file's defaults
(batch 8, lr 3e-4) are for quick checks, and reaching > 90% caption accuracy in a few minutes
on 2 cores wants bigger batches and a warmed-up, decaying, larger learning rate.
"""

import json
import os
import shutil
import sys
import time

import yaml

TOPOLOGY = "topologies/vlm-4rank.yaml"
OUT = "runs/demo"
SEED = 1234
STEPS = 300
TRAIN = {"global_batch": 64, "micro_batch": 8, "lr": 2.0e-3, "grad_clip": 1.0,
         "optimizer": {"lr_schedule": "warmup_cosine", "warmup_steps": 30, "min_lr": 1.0e-4}}
ENCODER_LR = 4.0e-3  # the vision encoder learns faster with a larger step
EVAL_EVERY = 50
COMPARE_STEPS = 50
TARGET = 0.90


def demo_topology():
    from mimo_runtime.topology import topology_from_dict

    with open(TOPOLOGY) as f:
        data = yaml.safe_load(f)
    data["train"] = {**data.get("train", {}), **TRAIN, "steps": STEPS}
    data["modules"]["images"]["optimizer"] = {"lr": ENCODER_LR}
    return topology_from_dict(data, source=TOPOLOGY)


def run(topology, colocated: bool, steps: int, **kw):
    from mimo_runtime.launch.local import launch_local
    from mimo_runtime.train.loop import RunConfig

    cfg = RunConfig(steps=steps, seed=SEED, colocated=colocated, nproc=1 if colocated else topology.world_size,
                    timeout_s=120, progress=True, eval_every=kw.pop("eval_every", EVAL_EVERY), **kw)
    return launch_local(topology, cfg)[0].metrics


def draw_timeline(trace: str, png: str) -> None:
    from mimo_runtime.launch.commands import timeline

    events, labels = timeline.load_events(trace)
    chosen = timeline.select(events, "last", "train", trace)
    timeline.draw(chosen, labels, png, f"{TOPOLOGY}: training step {STEPS} on 4 ranks (white = idle: bubbles)")


def main() -> int:
    from mimo_runtime.launch.cli import quiet_library_warnings

    quiet_library_warnings()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    topology = demo_topology()
    say = lambda text: print(text, flush=True)  # noqa: E731 - progress goes to stderr, results to stdout
    say(f"demo: tiny-vlm on the digits task, {TOPOLOGY} (images dp2 -> language tp2, 4 processes)")
    say(f"      {STEPS} steps of {TRAIN['global_batch']} samples, lr {TRAIN['lr']} (images {ENCODER_LR}), "
        f"warm-up + cosine; held-out eval every {EVAL_EVERY} steps")
    t0 = time.time()
    say("[1/3] heterogeneous run")
    hetero = run(topology, False, STEPS, metrics_path=f"{OUT}/metrics.jsonl", trace_path=f"{OUT}/trace.json",
                 checkpoint_dir=f"{OUT}/checkpoints", save_every=100, keep_last=2)
    t1 = time.time()
    say(f"[2/3] colocated reference: the same model, data and batches on 1 process, {COMPARE_STEPS} steps")
    colocated = run(topology, True, COMPARE_STEPS, metrics_path=f"{OUT}/colocated.jsonl", eval_every=0)
    t2 = time.time()
    say("[3/3] timeline")
    draw_timeline(f"{OUT}/trace.json", f"{OUT}/timeline.png")
    final = hetero[-1]
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(hetero, colocated)]
    summary = {"caption_accuracy": final["caption_accuracy"], "eval_loss": final["eval_loss"],
               "eval_samples": final["eval_samples"], "steps": STEPS, "compared_steps": len(diffs),
               "loss_max_abs_diff": max(diffs), "loss_max_abs_diff_first_10": max(diffs[:10]),
               "hetero_s": round(t1 - t0, 1), "colocated_s": round(t2 - t1, 1)}
    with open(f"{OUT}/summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    say("")
    say(f"final held-out caption accuracy: {100 * final['caption_accuracy']:.1f}% of {final['eval_samples']} "
        f"samples (eval loss {final['eval_loss']:.4f})" + ("" if final["caption_accuracy"] > TARGET else
                                                             f"  -- below the {100 * TARGET:.0f}% target"))
    say(f"vs the colocated run:           per-step loss max |difference| {max(diffs):.2e} over the first "
        f"{len(diffs)} steps ({max(diffs[:10]):.2e} over the first 10; loss {hetero[0]['loss']:.4f} -> "
        f"{hetero[len(diffs) - 1]['loss']:.4f} -> {final['loss']:.4f} at step {STEPS})")
    say(f"time: heterogeneous {t1 - t0:.0f} s, colocated {t2 - t1:.0f} s")
    say(f"wrote {OUT}/timeline.png, trace.json (open in ui.perfetto.dev), metrics.jsonl, checkpoints/, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
