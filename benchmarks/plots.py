"""Plots for docs/benchmarks.md from a `mimo-run bench -o FILE` result.

Run: .venv/bin/python benchmarks/plots.py benchmarks/results/latest.json docs/
Writes bench_bubble.png (bubble fraction vs microbatches: measured, simulated from the measured
per-action times, and (p-1)/(m+p-1)), bench_vs_torch.png (samples per second, ours and torch's,
median with interquartile range) and bench_frozen.png (step time with the frozen encoder leading or not).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def bubble(result: dict, out: Path) -> None:
    rows = result["details"]["pipeline"]["bubble"]
    ms = [r["microbatches"] for r in rows]
    fine = [m / 4 for m in range(4, 4 * max(ms) + 1)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(fine, [1 / (m + 1) for m in fine], "-", color="gray", label="(p-1)/(m+p-1), p=2")
    ax.plot(ms, [r["simulated_bubble"] for r in rows], "s--", label="simulated (measured action times)")
    ax.plot(ms, [r["measured_bubble"] for r in rows], "o-", label="measured (executor trace)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("microbatches per step (m)")
    _finish(fig, ax, "bubble fraction", "1F1B bubble, 2 stages (ours)", out / "bench_bubble.png")


def vs_torch(result: dict, out: Path) -> None:
    rows = result["details"]["pipeline"]["compare"]
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    for i, (key, label) in enumerate((("ours_step_s", "ours"), ("torch_step_s", "torch Schedule1F1B"))):
        samples = [r["ours_samples_per_s"] * r["ours_step_s"]["median"] for r in rows]
        med = [s / r[key]["median"] for s, r in zip(samples, rows)]
        lo = [m - s / r[key]["p75"] for m, s, r in zip(med, samples, rows)]
        hi = [s / r[key]["p25"] - m for m, s, r in zip(med, samples, rows)]
        ax.bar([j + i * width for j in range(len(rows))], med, width, yerr=[lo, hi], capsize=4, label=label)
    ax.set_xticks([j + width / 2 for j in range(len(rows))], [f"H={r['hidden']}" for r in rows])
    _finish(fig, ax, "samples per second (median, IQR)", "2-stage chain, m=8, 2 gloo ranks",
            out / "bench_vs_torch.png")


def frozen(result: dict, out: Path) -> None:
    fz = result["details"]["frozen"]
    labels = ["plain", "frozen encoder leads"]
    measured = [fz["plain_step_s"]["median"], fz["lead_step_s"]["median"]]
    simulated = [fz["simulated_step_s"]["plain"], fz["simulated_step_s"]["lead"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([0, 1], [m * 1e3 for m in measured], 0.38, label="measured")
    ax.bar([0.38, 1.38], [s * 1e3 for s in simulated], 0.38, label="simulated")
    ax.set_xticks([0.19, 1.19], labels)
    _finish(fig, ax, "ms per optimizer step (median)", "frozen encoder -> 1-stage language, 2 ranks",
            out / "bench_frozen.png")


def _finish(fig, ax, ylabel: str, title: str, path: Path) -> None:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 2:
        sys.stderr.write("usage: plots.py RESULT.json OUT_DIR\n")
        return 2
    result = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    details = result["details"]
    if "pipeline" in details:
        bubble(result, out)
        vs_torch(result, out)
    if "frozen" in details:
        frozen(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
