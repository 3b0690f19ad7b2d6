"""`mimo-run timeline TRACE.json -o timeline.png`: the per-rank Gantt chart of a `--trace` file.

One row per rank; forward, backward, weight gradient (zero bubble), sends, receives and the step's
reduction / optimizer step in their own colours, each compute bar labelled with its chunk under
interleaving (`c1:F3`); white space is idle time, so pipeline bubbles show as gaps. By default one
training step (the last) is drawn, which is what a schedule looks like; `--step all` draws the run.
"""

import json
from typing import Dict, List, Optional, Tuple

from mimo_runtime.errors import UserError

COLORS = {"F": "#4c72b0", "B": "#55a868", "W": "#a1c9a0", "SEND_F": "#dd8452", "SEND_B": "#dd8452",
          "RECV_F": "#c8c8c8", "RECV_B": "#c8c8c8", "REDUCE_GRADS": "#c44e52", "OPT_STEP": "#8172b3"}
LEGEND = [("forward", "F"), ("backward", "B"), ("weight grad", "W"), ("send", "SEND_F"), ("receive (waiting)", "RECV_F"),
          ("grad reduce", "REDUCE_GRADS"), ("optimizer", "OPT_STEP")]


def add_arguments(p) -> None:
    p.add_argument("trace", help="a Chrome-trace JSON written by `mimo-run train --trace`")
    p.add_argument("-o", "--output", default="timeline.png", metavar="PNG", help="image to write (default: timeline.png)")
    p.add_argument("--step", default="last", metavar="K|last|all",
                   help="the training step to draw (1-based, as in the metrics), 'last' (default) or 'all'")
    p.add_argument("--phase", choices=("train", "eval", "all"), default="train", help="which actions (default: train)")


class TraceFileError(UserError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")


def load_events(path: str) -> Tuple[List[Dict], Dict[int, str]]:
    """(complete events, {rank: label}) of a trace file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise TraceFileError(path, f"cannot read: {e.strerror}") from None
    except ValueError as e:
        raise TraceFileError(path, f"not JSON ({e})") from None
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise TraceFileError(path, "no traceEvents list: not a Chrome trace")
    spans = [e for e in events if isinstance(e, dict) and e.get("ph") == "X" and "args" in e]
    labels = {e["pid"]: e["args"]["name"] for e in events
              if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "process_name"}
    if not spans:
        raise TraceFileError(path, "has no action events (was it written by `mimo-run train --trace`?)")
    return spans, labels


def select(events: List[Dict], step: str, phase: str, path: str = "") -> List[Dict]:
    chosen = [e for e in events if phase == "all" or e["args"].get("phase") == phase]
    if not chosen:
        raise TraceFileError(path, f"has no {phase} actions")
    if step == "all":
        return chosen
    steps = sorted({e["args"]["step"] for e in chosen})
    if step == "last":
        want = steps[-1]
    else:
        try:
            want = int(step) - 1
        except ValueError:
            raise UserError(f"--step: expected a step number, 'last' or 'all', got {step!r}") from None
        if want not in steps:
            raise UserError(f"--step: step {step} is not in the trace (it has steps {steps[0] + 1}..{steps[-1] + 1})")
    return [e for e in chosen if e["args"]["step"] == want]


def busy_fractions(events: List[Dict]) -> Dict[int, float]:
    """{rank: forward + backward (+ weight-gradient) time / the window's length}; 1 - this is the rank's bubble."""
    t0 = min(e["ts"] for e in events)
    t1 = max(e["ts"] + e["dur"] for e in events)
    out: Dict[int, float] = {}
    for e in events:
        if e["args"]["kind"] in ("F", "B", "W"):
            out[e["pid"]] = out.get(e["pid"], 0.0) + e["dur"]
    return {r: out.get(r, 0.0) / max(t1 - t0, 1e-9) for r in sorted({e["pid"] for e in events})}


def label(event: Dict) -> str:
    """A bar's text: the action with its chunk under interleaving (`c1:F3`), from the event's action."""
    from mimo_runtime.schedule import parse_action

    try:
        return parse_action(event["args"]["action"]).cell()
    except (KeyError, ValueError):
        return event["name"]


def draw(events: List[Dict], labels: Dict[int, str], output: str, title: Optional[str] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ranks = sorted({e["pid"] for e in events})
    t0 = min(e["ts"] for e in events)
    window = max(e["ts"] + e["dur"] for e in events) - t0
    busy = busy_fractions(events)
    fig, ax = plt.subplots(figsize=(12, 0.7 * len(ranks) + 1.6))
    for row, rank in enumerate(ranks):
        mine = [e for e in events if e["pid"] == rank]
        bars = [((e["ts"] - t0) / 1e3, max(e["dur"] / 1e3, 1e-3)) for e in mine]
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=[COLORS.get(e["args"]["kind"], "#999999") for e in mine],
                       edgecolor="white", linewidth=0.3)
        for e in mine:
            if e["args"]["kind"] in ("F", "B", "W") and e["dur"] > 0.03 * window:
                ax.text((e["ts"] - t0 + e["dur"] / 2) / 1e3, row, label(e), ha="center", va="center",
                        fontsize=6, color="white", clip_on=True)
    ax.set_yticks(range(len(ranks)))
    ax.set_yticklabels([f"{labels.get(r, f'rank {r}')}\ncompute {100 * busy[r]:.0f}%" for r in ranks], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms, common clock)")
    ax.set_title(title or "per-rank timeline (white = idle: pipeline bubbles)", fontsize=10)
    ax.legend(handles=[Patch(color=COLORS[k], label=name) for name, k in LEGEND], loc="upper center",
              bbox_to_anchor=(0.5, -0.22 if len(ranks) < 4 else -0.12), ncol=len(LEGEND), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(output, dpi=130)
    plt.close(fig)


def run(args) -> int:
    import os

    events, labels = load_events(args.trace)
    chosen = select(events, args.step, args.phase, args.trace)
    steps = sorted({e["args"]["step"] + 1 for e in chosen})
    which = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    draw(chosen, labels, args.output, f"{os.path.basename(args.trace)}: {args.phase} {which} "
                                      f"(white = idle: pipeline bubbles)")
    for rank, frac in busy_fractions(chosen).items():
        print(f"rank {rank:>3}  {labels.get(rank, '')}: compute {100 * frac:.0f}%  idle or communicating "
              f"{100 * (1 - frac):.0f}%")
    print(f"wrote {args.output}")
    return 0
