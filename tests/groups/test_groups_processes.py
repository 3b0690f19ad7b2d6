"""Real gloo processes: every rank's process groups contain exactly the ranks the plan predicts.

One launch per world size checks several topologies: every rank builds every plan's groups in
the same order (torch.distributed requires it), reports its memberships and an all-reduce over
each group, and the parent compares them with predictions made from plan coordinates alone.
"""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mimo_runtime.groups import build_module_groups  # imported here so ranks load megatron before rendezvous
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.plan import DIM_NAMES, make_plan
from mimo_runtime.topology import load_topology, topology_from_dict

ROOT = Path(__file__).resolve().parents[2]

# ProcessGroupCollection field -> the grid dims its members vary over (megatron's meaning)
FIELD_DIMS = {"tp": {"tp"}, "cp": {"cp"}, "dp": {"dp"}, "pp": {"pp"}, "dp_cp": {"cp", "dp"},
              "tp_cp": {"tp", "cp"}, "mp": {"tp", "pp"}, "tp_dp_cp": {"tp", "cp", "dp"}}
FIELDS = [*FIELD_DIMS, "embd", "pos_embd"]


def _lang(**parallel):
    return {"kind": "language", "parallel": parallel}


def _enc(**parallel):
    return {"kind": "encoder", "parallel": parallel}


INLINE = {
    "lm-tp2-pp2": {"model": "tiny-lm", "modules": {"language": _lang(tp=2, pp=2)}},
    "colocated-tp2-vs-cp2": {"model": "tiny-vlm", "placement": "colocated", "modules": {
        "images": {**_enc(tp=2, dp=2), "ranks": 4}, "language": {**_lang(cp=2, dp=2), "ranks": 4}}},
    "lm-tp2-cp2-pp2": {"model": "tiny-lm", "modules": {"language": _lang(tp=2, cp=2, pp=2)},
                       "train": {"global_batch": 8, "micro_batch": 2}},
    "avlm-dp2-tp2-pp2": {"model": "tiny-avlm", "modules": {
        "images": _enc(dp=2), "audio": _enc(tp=2), "language": _lang(dp=2, pp=2)}},
}
SCENARIOS = {
    4: ["vlm-4rank.yaml", "vlm-fanout-4rank.yaml", "avlm-4rank.yaml", "lm-tp2-pp2", "colocated-tp2-vs-cp2"],
    8: ["vlm-8rank.yaml", "lm-tp2-cp2-pp2", "avlm-dp2-tp2-pp2"],
}


def plan_for(name):
    if name.endswith(".yaml"):
        return make_plan(load_topology(str(ROOT / "topologies" / name)))
    return make_plan(topology_from_dict(INLINE[name], name))


def predicted(m, rank, field):
    """Members of `rank`'s group from plan coordinates alone (None: rank is in no such group)."""
    c = m.coords(rank)
    if field in FIELD_DIMS:
        fixed = [d for d in DIM_NAMES if d not in FIELD_DIMS[field]]
        return sorted(r for r in m.ranks if all(getattr(m.coords(r), d) == getattr(c, d) for d in fixed))
    first = m.rank(c.tp, c.cp, c.dp, 0)
    last = m.rank(c.tp, c.cp, c.dp, m.pp - 1)
    if field == "pos_embd":
        return [rank] if rank == first else None
    return sorted({first, last}) if rank in (first, last) else None


def _worker(rank, world_size, names):
    seen = {}
    for name in names:
        plan = plan_for(name)
        for module, g in build_module_groups(plan, timeout_s=60).items():
            if g.pgs is None:
                seen[(name, module)] = None
                continue
            for field in FIELDS:
                pg = getattr(g.pgs, field)
                if pg is None:
                    seen[(name, module, field)] = None
                    continue
                total = torch.tensor([rank])
                dist.all_reduce(total, group=pg)
                seen[(name, module, field)] = (sorted(dist.get_process_group_ranks(pg)), int(total))
    return seen


@pytest.mark.parametrize("world_size", sorted(SCENARIOS))
def test_real_group_memberships_equal_the_plan(world_size):
    names = SCENARIOS[world_size]
    results = spawn(_worker, world_size, args=(names,), timeout_s=300, collective_timeout_s=60)
    for name in names:
        plan = plan_for(name)
        assert plan.world_size == world_size, name
        for rank, seen in enumerate(results):
            for module, m in plan.modules.items():
                if not m.holds(rank):
                    assert seen[(name, module)] is None, (name, module, rank)
                    continue
                for field in FIELDS:
                    want = predicted(m, rank, field)
                    got = seen[(name, module, field)]
                    expect = None if want is None else (want, sum(want))
                    assert got == expect, (name, module, field, rank)


def test_predictions_match_hand_checked_groups():
    lang = plan_for("vlm-8rank.yaml").language  # ranks 4-7: tp2 x pp2, pp slowest
    assert [predicted(lang, 4, f) for f in ("tp", "pp", "mp", "dp", "embd", "pos_embd")] == [
        [4, 5], [4, 6], [4, 5, 6, 7], [4], [4, 6], [4]]
    assert predicted(lang, 7, "pos_embd") is None and predicted(lang, 7, "embd") == [5, 7]
    lm = plan_for("lm-tp2-cp2-pp2").language  # tp fastest, then cp, then pp
    assert predicted(lm, 1, "tp_cp") == [0, 1, 2, 3] and predicted(lm, 1, "cp") == [1, 3]
    assert predicted(lm, 1, "dp_cp") == [1, 3] and predicted(lm, 1, "tp_dp_cp") == [0, 1, 2, 3]
