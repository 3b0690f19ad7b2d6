"""An evaluated candidate -> a topology (dict and YAML text) that `load_topology` accepts."""

from typing import Dict, Optional

import yaml

from mimo_runtime.autoplan.search import LANG, Evaluation, Problem


def topology_dict(p: Problem, ev: Evaluation, name: Optional[str] = None) -> Dict:
    modules = {}
    chunks = dict(ev.vpp)
    for module, (tp, cp, dp, pp) in ev.candidate:
        parallel = {"tp": tp, "dp": dp, "pp": pp}
        if chunks.get(module, 1) > 1:
            parallel["vpp"] = chunks[module]
        if module == LANG:
            parallel["cp"] = cp
        entry = {"kind": "language" if module == LANG else "encoder", "ranks": tp * cp * dp * pp,
                 "parallel": parallel}
        if module in p.frozen:
            entry["frozen"] = True
        modules[module] = entry
    train = {"global_batch": p.global_batch, "micro_batch": p.micro_batch}
    if ev.schedule != "1f1b":
        train["schedule"] = ev.schedule
    return {"name": name or f"auto-{p.preset.name}-{p.world_size}", "model": p.preset.name, "modules": modules,
            "train": train}


def _chunks(ev: Evaluation) -> str:
    return f" (vpp {', '.join(f'{n}={v}' for n, v in ev.vpp)})" if ev.vpp else ""


def topology_yaml(p: Problem, ev: Evaluation, naive: Optional[Evaluation] = None) -> str:
    head = [f"# Written by `mimo-run plan --auto --world-size {p.world_size} --model {p.preset.name}`.",
            f"# Predicted step time {ev.step_s:.6g} s, bubble {ev.bubble:.3f}, peak {ev.peak_gib:.3g} GiB per rank "
            f"(memory limit {p.memory_gib:g} GiB).",
            f"# Schedule {ev.schedule}{_chunks(ev)}: predicted {ev.gain:.3f}x the step rate of 1f1b on these shapes."]
    if naive is not None:
        head.append(f"# Naive even split: {naive.step_s:.6g} s, bubble {naive.bubble:.3f} "
                    f"({naive.step_s / ev.step_s:.2f}x the auto plan's step time).")
    body = yaml.safe_dump(topology_dict(p, ev), sort_keys=False, default_flow_style=None)
    return "\n".join(head) + "\n" + body
