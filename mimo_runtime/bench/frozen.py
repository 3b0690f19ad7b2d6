"""Frozen-encoder-aware schedule, measured: a frozen encoder leads the language across step boundaries.

Two ranks: a frozen encoder (rank 0, `enc_layers` x (Linear + GELU), no gradients at all) feeding a
one-stage language model (rank 1) over the real Bridge. Both schedules are multi-step lists from
`build_steps` with the encoder frozen entirely (no backward, no gradient traffic); the plain one
(lead 0) makes the language wait for the encoder's first forward every step, the frozen-aware one
(lead 1) computes it before the previous step's optimizer barrier. Repetitions alternate.
"""

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F

from mimo_runtime.plan import ModuleLayout, ModulePlan, Plan

ENC, LANG = "images", "language"


@dataclass(frozen=True)
class FrozenBench:
    hidden: int = 256
    enc_layers: int = 12
    lang_layers: int = 4
    tokens: int = 4  # rows per sample
    micro_batch: int = 4
    microbatches: int = 4
    steps: int = 4  # optimizer steps per list (the first is the cold start)
    reps: int = 10
    lead: int = 1


def frozen_plan(b: FrozenBench) -> Plan:
    enc = ModulePlan(ENC, "encoder", 0, 1, 1, 1, 1, 1, True)
    lang = ModulePlan(LANG, "language", 1, 1, 1, 1, 1, 1)
    return Plan(2, ModuleLayout.NON_COLOCATED, {ENC: enc, LANG: lang}, ((ENC, LANG),),
                b.micro_batch * b.microbatches, b.micro_batch, None)


def _stack(hidden: int, layers: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[m for _ in range(layers) for m in (torch.nn.Linear(hidden, hidden), torch.nn.GELU())])


class FrozenCompute:
    """Executor compute for the pair; each (step, microbatch) of a multi-step list has its own data."""

    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, b: FrozenBench, rank: int):
        self.b, self.rank, self.hidden = b, rank, b.hidden
        self.module = _stack(b.hidden, b.enc_layers if rank == 0 else b.lang_layers, rank)
        if rank == 0:
            self.module.requires_grad_(False)

    def _data(self, mb: int):
        gen = torch.Generator().manual_seed(mb)
        rows = self.b.micro_batch * self.b.tokens
        return torch.randn(rows, self.hidden, generator=gen), torch.randn(rows, self.hidden, generator=gen)

    def encoder_rows(self, enc: str, step: int, mb: int) -> List[int]:
        return [self.b.tokens] * self.b.micro_batch

    language_rows = encoder_rows

    def forward(self, module: str, step: int, mb: int, inputs: Dict[str, torch.Tensor], st,
                chunk: int = 0) -> torch.Tensor:
        x, target = self._data(step * self.b.microbatches + mb)
        if module == ENC:
            with torch.no_grad():
                return self.module(x)
        loss = F.mse_loss(self.module(inputs[ENC]), target) / self.b.microbatches
        st.loss_sum += float(loss.detach())
        return loss

    def reduce_grads(self, module: str) -> None:
        """One replica: nothing to reduce."""


def frozen_rank(rank: int, world_size: int, b: FrozenBench) -> Dict:
    """Alternating repetitions of the plain and the leading multi-step lists; per-step times from the trace."""
    import torch.distributed as dist

    from mimo_runtime.schedule import build_steps
    from mimo_runtime.train.executor import Executor

    torch.set_num_threads(1)
    plan = frozen_plan(b)
    compute = FrozenCompute(b, rank)
    opt = torch.optim.SGD(compute.module.parameters(), lr=1e-3) if rank == 1 else None

    def opt_step(st) -> None:
        dist.all_reduce(torch.zeros(2))  # the runtime's grad-norm all-reduce: a barrier over every rank
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    ex = Executor(plan, rank, compute, 60.0, {ENC: False, LANG: True}, opt_step)
    lists = {lead: build_steps(plan, b.microbatches, b.steps, frozen_all=[ENC], lead=lead).for_rank(plan, rank)
             for lead in (0, b.lead)}
    out: Dict[str, object] = {"plain": [], "lead": [], "actions": {}}
    for r in range(b.reps + 1):
        for name in (("plain", "lead") if r % 2 == 0 else ("lead", "plain")):
            acts = lists[0 if name == "plain" else b.lead]
            ex.trace.clear()
            dist.barrier()
            ex.run_step(acts, 0)
            ends = [t1 for a, (_, _, t1) in zip(acts, ex.trace) if a.kind == "OPT_STEP"]
            if r:  # the first round warms up
                out[name].append((ends[-1] - ends[0]) / (len(ends) - 1))
                for a, (_, t0, t1) in zip(acts, ex.trace):
                    out["actions"].setdefault(a.kind, []).append(t1 - t0)
    return out


def summarize(b: FrozenBench, per_rank: List[Dict]) -> Dict:
    from mimo_runtime.bench.stats import median, ratio_spread, spread
    from mimo_runtime.schedule import Costs, build_steps, simulate

    lang = per_rank[1]
    plain, lead = lang["plain"], lang["lead"]
    plan = frozen_plan(b)
    costs = Costs(forward={ENC: median(per_rank[0]["actions"]["F"]), LANG: median(lang["actions"]["F"])},
                  backward={ENC: 0.0, LANG: median(lang["actions"]["B"])})
    sim = {}
    for name, k in (("plain", 0), ("lead", b.lead)):
        s = build_steps(plan, b.microbatches, b.steps, frozen_all=[ENC], lead=k)
        r = simulate(s, costs)
        node = s.nodes[-1]
        ends = [e for a, e in zip(s.actions[node], r.end[node]) if a.kind == "OPT_STEP"]
        sim[name] = (ends[-1] - ends[0]) / (len(ends) - 1)
    return {"frozen_encoder_speedup": round(median(plain) / median(lead), 4),
            "frozen_encoder_speedup_simulated": round(sim["plain"] / sim["lead"], 4),
            "paired_speedup": ratio_spread(plain, lead), "plain_step_s": spread(plain), "lead_step_s": spread(lead),
            "simulated_step_s": {k: round(v, 6) for k, v in sim.items()},
            "setup": {"encoder_layers": b.enc_layers, "language_layers": b.lang_layers, "hidden": b.hidden,
                      "microbatches": b.microbatches, "lead": b.lead}}
