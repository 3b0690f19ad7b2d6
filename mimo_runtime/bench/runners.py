"""One chain rank under each runtime: ours (schedule lists + comm + Executor) and torch's schedule of the
same kind (Schedule1F1B; ScheduleInterleaved1F1B or ScheduleInterleavedZeroBubble over the chunks at vpp > 1).

Both start from identical stage weights and take an SGD step after every pipeline step, so the
work per step is the same; `step(s)` runs global batch s and returns when this rank is done.
"""

import copy
from typing import List, Optional, Tuple

import torch

from mimo_runtime.bench.chain import LANG, ChainCompute, ChainConfig, batch, build_stage, chain_loss, chain_plan
from mimo_runtime.comm.lowering import lower_plan
from mimo_runtime.comm.release import list_releases, program_releases
from mimo_runtime.schedule import build_schedule
from mimo_runtime.schedule.actions import RECV_KINDS, SEND_KINDS
from mimo_runtime.train.executor import Executor

LR = 1e-3


class OursChain:
    def __init__(self, cfg: ChainConfig, rank: int, module: torch.nn.Module, timeout_s: float = 60.0,
                 slack: int = 0, transport: Optional[str] = None):
        self.cfg, self.rank, self.module = cfg, rank, module
        self.plan = chain_plan(cfg)
        self.opt = torch.optim.SGD(module.parameters(), lr=LR)
        self.compute = ChainCompute(cfg, rank, module)
        self.executor = Executor(self.plan, rank, self.compute, timeout_s, {LANG: True}, self._opt_step,
                                 transport)
        self.schedule = build_schedule(self.plan, cfg.microbatches, cfg.schedule, slack=slack)
        self.actions = self.schedule.for_rank(self.plan, rank)
        # bare lists match messages in posting order per rank pair; where an interleaved list receives
        # in another order than its peer sends (schedule/validate.py), run the lowered program instead;
        # sends are completed as soon as they are known taken (comm/release.py)
        if _same_order_per_pair(self.schedule, self.plan):
            self.program, self.released = None, list_releases(self.schedule, self.plan)[rank]
        else:
            programs = lower_plan(self.schedule, self.plan)
            self.program, self.released = programs[rank], program_releases(programs)[rank]
        self.loss = 0.0

    def _opt_step(self, st) -> None:
        self.loss = st.loss_sum
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)  # what our trainer does (train/optim.py): gradient buffers persist

    def step(self, s: int) -> None:
        self.executor.trace.clear()
        self.executor.run_step(self.actions, s, program=self.program, released=self.released)

    @property
    def trace(self) -> List[Tuple[str, float, float]]:
        return self.executor.trace


TORCH_SCHEDULES = {"1f1b": "Schedule1F1B", "interleaved_1f1b": "ScheduleInterleaved1F1B",
                   "zero_bubble": "ScheduleInterleavedZeroBubble"}


def _same_order_per_pair(schedule, plan) -> bool:
    """Whether every rank receives from each peer in the order that peer sends to it."""
    lists = [schedule.for_rank(plan, r) for r in range(plan.world_size)]
    for r, acts in enumerate(lists):
        for peer in range(plan.world_size):
            if peer == r:
                continue
            sent = [(a.kind[-1], a.mb, a.peer_chunk) for a in acts if a.kind in SEND_KINDS and a.peer[1] == peer]
            got = [(a.kind[-1], a.mb, a.chunk) for a in lists[peer] if a.kind in RECV_KINDS and a.peer[1] == r]
            if sent != got:
                return False
    return True


class TorchChain:
    """torch's schedule of `cfg.schedule`'s kind and the usual loop around it; `keep_grads` zeroes gradients
    in place as ours does."""

    def __init__(self, cfg: ChainConfig, rank: int, module: torch.nn.Module, keep_grads: bool = False):
        import torch.distributed.pipelining as pipelining

        self.cfg, self.rank, self.module = cfg, rank, module
        self.opt = torch.optim.SGD(module.parameters(), lr=LR)
        shape = (cfg.micro_batch, cfg.hidden)
        # Example shapes skip torch's shape-inference round trip, as known shapes skip ours.
        device = torch.device(cfg.device)
        chunks = list(module) if cfg.vpp > 1 else [module]
        n = cfg.stages * cfg.vpp
        stages = [pipelining.PipelineStage(
            chunk, c * cfg.stages + rank, n, device,
            input_args=(torch.empty(shape, device=device, requires_grad=c * cfg.stages + rank > 0),),
            output_args=torch.empty(shape, device=device, requires_grad=True)) for c, chunk in enumerate(chunks)]
        kind = getattr(pipelining, TORCH_SCHEDULES[cfg.schedule])
        self.schedule = kind(stages if cfg.vpp > 1 else stages[0], cfg.microbatches, loss_fn=chain_loss)
        self.first, self.last = rank == 0, rank == cfg.stages - 1  # the ranks of virtual stages 0 and n - 1
        self.keep_grads = keep_grads
        self.loss = 0.0

    def step(self, s: int) -> None:
        x, target = batch(self.cfg, s)
        if self.first:
            self.schedule.step(x)
        elif self.last:
            losses: List[torch.Tensor] = []
            self.schedule.step(target=target, losses=losses)
            self.loss = float(sum(l.detach() for l in losses)) / self.cfg.microbatches
        else:
            self.schedule.step()
        self.opt.step()
        self.opt.zero_grad(set_to_none=not self.keep_grads)


def both(cfg: ChainConfig, rank: int, slack: int = 0, transport: Optional[str] = None) -> Tuple[OursChain, TorchChain]:
    """Our runtime and torch's on copies of the same stage."""
    module = build_stage(cfg, rank)
    theirs = TorchChain(cfg, rank, copy.deepcopy(module))  # copied before ours splits its linears (zero_bubble)
    return OursChain(cfg, rank, module, slack=slack, transport=transport), theirs

