"""An evaluated candidate -> a topology (dict and YAML text) that `load_topology` accepts."""

from typing import Dict, Optional

import yaml

from mimo_runtime.autoplan.search import LANG, Evaluation, Problem


def topology_dict(p: Problem, ev: Evaluation, name: Optional[str] = None) -> Dict:
    modules = {}
    for module, (tp, cp, dp, pp) in ev.candidate:
        parallel = {"tp": tp, "dp": dp, "pp": pp}
        if module == LANG:
            parallel["cp"] = cp
        entry = {"kind": "language" if module == LANG else "encoder", "ranks": tp * cp * dp * pp,
                 "parallel": parallel}
        if module in p.frozen:
            entry["frozen"] = True
        modules[module] = entry
    return {"name": name or f"auto-{p.preset.name}-{p.world_size}", "model": p.preset.name, "modules": modules,
            "train": {"global_batch": p.global_batch, "micro_batch": p.micro_batch}}


def topology_yaml(p: Problem, ev: Evaluation, naive: Optional[Evaluation] = None) -> str:
    head = [f"# Written by `mimo-run plan --auto --world-size {p.world_size} --model {p.preset.name}`.",
            f"# Predicted step time {ev.step_s:.6g} s, bubble {ev.bubble:.3f}, peak {ev.peak_gib:.3g} GiB per rank "
            f"(memory limit {p.memory_gib:g} GiB)."]
    if naive is not None:
        head.append(f"# Naive even split: {naive.step_s:.6g} s, bubble {naive.bubble:.3f} "
                    f"({naive.step_s / ev.step_s:.2f}x the auto plan's step time).")
    body = yaml.safe_dump(topology_dict(p, ev), sort_keys=False, default_flow_style=None)
    return "\n".join(head) + "\n" + body
