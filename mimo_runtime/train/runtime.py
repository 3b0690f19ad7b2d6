"""Runtime: everything one rank builds for a run, and one training / evaluation step.

`Runtime(topology, cfg)` on an initialized process group gives the plan, this rank's role and
groups, the model (only this rank's modules), the optimizers and the executor;
`train_step(step)` runs the schedule's action list once and returns the step's metrics on every
rank. The loop (loop.py) and the Python API are thin layers over it.
"""

import time
from typing import Dict, Optional

import torch.distributed as dist

from mimo_runtime.plan import Plan, colocated_plan, make_plan
from mimo_runtime.topology import Topology
from mimo_runtime.train.config import RunConfig
from mimo_runtime.train.executor import Executor, StepState
from mimo_runtime.train.feed import Feeder
from mimo_runtime.train.mimo_compute import MimoCompute
from mimo_runtime.train.nonfinite import first_nonfinite, inject_nan, nan_from_env, nonfinite_error
from mimo_runtime.train.controls import prepare_modules
from mimo_runtime.train.device import run_device
from mimo_runtime.train.lr_schedule import learning_rates
from mimo_runtime.train.optim import (build_optimizers, global_loss, global_norm_and_loss, set_learning_rates,
                                      step_optimizers)
from mimo_runtime.train.sampler import Sampler


def plan_for(topology: Topology, cfg: RunConfig) -> Plan:
    return colocated_plan(topology, cfg.nproc) if cfg.colocated else make_plan(topology)


class Runtime:
    def __init__(self, topology: Topology, cfg: RunConfig, rank: Optional[int] = None):
        from mimo_runtime.data.factory import has_data, open_dataset
        from mimo_runtime.groups import build_module_groups
        from mimo_runtime.model import build_model, masked_token_loss_sum
        from mimo_runtime.comm import shm
        from mimo_runtime.comm.lowering import lower_plan, step_programs
        from mimo_runtime.comm.release import program_releases
        from mimo_runtime.schedule import build_schedule, step_lists

        self.topology, self.cfg = topology, cfg
        self.rank = dist.get_rank() if rank is None else rank
        self.plan = plan_for(topology, cfg)
        self.role = self.plan.role(self.rank)
        self.groups = build_module_groups(self.plan, cfg.timeout_s)
        self.device = run_device(cfg.device)
        # TE's layers only where the model is on CUDA (model/specs.py); CPU keeps the portable spec
        self.model = build_model(self.plan, self.groups, self.rank, cfg.seed,
                                 "auto" if self.device.type == "cuda" else "portable", device=self.device)
        self.frozen_all = prepare_modules(self.model, self.plan, self.rank)  # freeze, pretrained, precision
        # the gradient path (train/device.py resolve_grad_reducer): megatron's DDP + distributed optimizer
        # (train/megatron_ddp.py, CUDA), else our bucketed all-reduce + torch.optim (train/grads.py, optim.py)
        self.megatron = None
        if cfg.grad_reducer == "megatron":
            from mimo_runtime.train.megatron_ddp import MegatronGrads

            self.megatron = MegatronGrads(self.model, self.plan, self.rank, self.groups, topology.train.grad_clip,
                                          cfg.timeout_s)
            self.optimizers = self.megatron.views
        else:
            self.optimizers = build_optimizers(self.model, self.plan, self.rank)
        # the topology's data (data/factory.py); None when only the caller's batches feed it (mimo_runtime.api)
        self.dataset = open_dataset(topology, "train", cfg.seed, self.rank, self.model_facts()[1]) \
            if has_data(topology) else None
        self.feeder = self.make_feeder(self.dataset) if self.dataset is not None else None
        m = self.plan.num_microbatches
        # frozen encoders: no backward at all when frozen entirely; with a trainable projection their
        # forwards run ahead of the language pipeline within a step; the stages that train nothing also
        # compute the next step's first `frozen_lead` forwards before the optimizer barrier (schedule/steps.py,
        # docs/benchmarks.md "Frozen-encoder-aware schedule")
        lists = step_lists(self.plan, m, cfg.schedule, self.frozen_all, lead=min(cfg.frozen_lead, m), frozen_ahead=True)
        self.train_lists = {name: s.for_rank(self.plan, self.rank) for name, s in lists.items()}
        self.train_actions = self.train_lists["plain"]
        self.eval_actions = build_schedule(self.plan, m, "forward").for_rank(self.plan, self.rank)
        # what the executor posts: each list's p2p groups on this rank (schedule/lower.py), the bridge
        # relaying on the receiving host when its modules are on several (collective: every rank asks)
        hosts = shm.host_keys() if self.plan.edges else None
        programs = step_programs(self.plan, m, cfg.schedule, self.frozen_all, lead=min(cfg.frozen_lead, m),
                                 hosts=hosts, frozen_ahead=True)
        self.train_programs = {name: p[self.rank] for name, p in programs.items()}
        # when each send is known taken, so its buffer (a forward output, a gradient) goes then (comm/release.py)
        self.train_released = {name: program_releases(p)[self.rank] for name, p in programs.items()}
        eval_programs = lower_plan(build_schedule(self.plan, m, "forward"), self.plan, hosts)
        self.eval_program, self.eval_released = eval_programs[self.rank], program_releases(eval_programs)[self.rank]
        compute = MimoCompute(self.plan, self.groups, self.model, self.rank, self.feeder, masked_token_loss_sum,
                              split_weights=cfg.schedule == "zero_bubble")  # B and W (model/weight_grad.py)
        if self.megatron is not None:
            compute.reduce_grads = self.megatron.reduce_grads  # the REDUCE action: DDP's buffers, not .grad
        # `frozen: true` keeps the projection trainable; only an encoder frozen entirely stops gradients
        trainable = {n: n not in self.frozen_all for n in self.plan.modules}
        self.executor = Executor(self.plan, self.rank, compute, cfg.timeout_s, trainable, self._optimizer_step,
                                 hosts=hosts)
        self.before_optimizer_step = None  # tests: called with the step before gradients are clipped
        self._last: Dict[str, float] = {}
        self.skipped_steps = 0  # non-finite steps dropped under train.skip_nonfinite (train/nonfinite.py)
        self._nan = nan_from_env(self.rank)

    def model_facts(self):
        """(tokens_per_item by modality, sequence length or None) from the model's config."""
        from mimo_runtime.model.factory import seq_length

        config = self.model.mimo_config
        return config.tokens_per_item, seq_length(config)

    def make_feeder(self, dataset, shuffle: bool = True) -> Feeder:
        """A feeder over `dataset` (the feeder interface of data/factory.py) with this run's plan."""
        from mimo_runtime.data import collate_modality, collate_tokens

        sampler = Sampler.for_plan(self.plan, len(dataset), self.cfg.seed, shuffle, self._balanced_order(dataset))
        return Feeder(self.plan, dataset, sampler, collate_tokens, collate_modality, self.model_facts()[0])

    def _balanced_order(self, dataset):
        """data.balance: each step's samples dealt evenly over microbatches and DP replicas (data/balance.py)."""
        if not getattr(self.topology.data, "balance", False) or not hasattr(dataset, "cost"):
            return None
        from mimo_runtime.data.balance import BalancedOrder

        return BalancedOrder(dataset.cost, self.plan.num_microbatches, max(m.dp for m in self.plan.modules.values()))

    def _require_data(self) -> None:
        if self.executor.compute.feeder is None:
            from mimo_runtime.data.factory import open_dataset

            open_dataset(self.topology, "train", self.cfg.seed, self.rank)  # raises: what the topology lacks

    def _optimizer_step(self, st: StepState) -> None:
        loss_sum = st.loss_sum
        if self._nan is not None and self._nan[0] == st.step:
            loss_sum = inject_nan(self.model, self._nan[1], loss_sum)
        if self.megatron is not None:
            norm, norms, loss = self.megatron.norm_and_loss(loss_sum)
        else:
            norm, norms, loss = global_norm_and_loss(self.model, self.plan, self.rank, loss_sum)
        if self.before_optimizer_step is not None:
            self.before_optimizer_step(st.step)
        self._last = {"loss": loss, "grad_norm": norm, "grad_norm_by_module": norms}
        bad = first_nonfinite(loss, norms)
        if bad is not None:
            if not self.topology.train.skip_nonfinite:
                raise nonfinite_error(st.step + 1, bad[0], bad[1], loss if bad[0] == "loss" else norms[bad[1]])
            self.skipped_steps += 1
            self.model.zero_grad(set_to_none=False)
            if self.megatron is not None:
                self.megatron.zero_grad()
        else:
            set_learning_rates(self.optimizers, self.plan, st.step)
            if self.megatron is not None:
                self.megatron.step(norm, self.topology.train.grad_clip)
            else:
                step_optimizers(self.model, self.optimizers, norm, self.topology.train.grad_clip)
        self._last["skipped_steps"] = self.skipped_steps

    def train_step(self, step: int) -> Dict[str, float]:
        """One optimizer step over global batch `step`; the same metrics on every rank."""
        self.model.train()
        self._require_data()
        t0 = time.perf_counter()
        name = self.train_list_name(step)
        self.executor.run_step(self.train_lists[name], step, train=True, program=self.train_programs[name],
                               released=self.train_released[name])
        lrs = learning_rates(self.topology, step)
        data = self.executor.compute.feeder.step_metrics(step)
        return {"step": step + 1, **self._last, "step_time_s": time.perf_counter() - t0, **data,
                "lr": lrs["language"], **{f"lr.{n}": lr for n, lr in lrs.items() if n != "language"}}

    def train_list(self, step: int):
        return self.train_lists[self.train_list_name(step)]

    def train_list_name(self, step: int) -> str:
        """Which list trains step `step`: with the previous step's lead carried in or not, computing the
        next step's lead or not (none after the run's last step)."""
        ahead = step + 1 < self.cfg.steps
        if self.executor.carried(step):
            return "steady" if ahead else "last"
        return "first" if ahead else "plain"

    def eval_step(self, step: int) -> float:
        """Forward-only pass over global batch `step` (no gradients); the global loss on every rank."""
        self.model.eval()
        self._require_data()
        st = self.executor.run_step(self.eval_actions, step, train=False, program=self.eval_program,
                                    released=self.eval_released)
        return global_loss(self.plan, self.rank, st.loss_sum, self.executor.compute.device)
