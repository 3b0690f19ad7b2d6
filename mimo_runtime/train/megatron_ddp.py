"""The CUDA gradient path (`train.grad_reducer: megatron`, the default on CUDA): megatron-core's
DistributedDataParallel per module (contiguous, bucketed grad buffers) and its distributed optimizer
(ZeRO-1: each dp_cp rank keeps the optimizer state of its slice of the buffer) per module, with one
global gradient norm and clipping across modules, as upstream's MimoOptimizer does.

What our semantics need from megatron-core 0.16.1 (read in its source; megatron's DDP and
distributed optimizer allocate and type-check CUDA tensors, so none of this runs on CPU):

- `calculate_per_token_loss=True` on the config DDP reads: otherwise DDP scales every gradient by
  1/dp_cp, while our losses are already divided by the global token count and gradients are SUMs.
- `overlap_grad_reduce` stays off. With it, a bucket launches its reduction from the backward hooks
  once every parameter has as many gradients as in the first step (it asserts otherwise), and
  text-only microbatches, replicas given no images, CLIP layers past `vision_feature_layer`, frozen
  parts and the zero-bubble schedule's deferred weight gradients all break that. Without it the
  hooks only accumulate into the buffers and the whole reduction runs in `finish_grad_sync`, which
  the executor's REDUCE action calls after the module's last backward of the step: gradients are
  synchronized once per step, so `no_sync` has nothing to suppress.
- Megatron's optimizer builder wants more groups than our collections carry: `expt_dp`,
  `tp_ep_pp`, `intra_dist_opt` (upstream's get_mimo_optimizer takes them from its grid) and DDP an
  `ep` group. Without experts and with one optimizer instance they are the module's dp, tp x pp and
  dp_cp groups, and ep is this rank alone (`optimizer_groups`).
- The global norm: each rank adds the squares of its own slice of each module's main gradients
  (megatron's `get_main_grads_for_grad_norm` drops TP duplicates and the tied embedding's second
  copy), and one world all-reduce sums them with the loss, as the CPU path does (train/optim.py).
- Checkpoints stay the runtime's format (one full tensor per parameter and state): before a save
  each module's state slices are assembled into full tensors over dp_cp, and after a load each rank
  takes its slices back (`TorchView`), so either reducer resumes the other's checkpoints.
"""

import copy
import math
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan
from mimo_runtime.train.optim import loss_share, module_parameters
from mimo_runtime.train.precision import module_roots


def optimizer_groups(pgs, ep_group):
    """The module's ProcessGroupCollection plus the groups megatron's DDP and optimizer builder ask for."""
    from megatron.core.process_groups_config import ProcessGroupCollection

    have = {name: getattr(pgs, name) for name in ("tp", "cp", "dp", "pp", "dp_cp", "tp_cp", "mp", "tp_dp_cp",
                                                  "embd", "pos_embd") if hasattr(pgs, name)}
    return ProcessGroupCollection(**have, ep=ep_group, expt_dp=pgs.dp, tp_ep_pp=pgs.mp, intra_dist_opt=pgs.dp_cp)


def optimizer_config(opt, grad_clip: float):
    """megatron's OptimizerConfig for a resolved `optimizer` section (fp32 master weights and grads;
    bf16 compute is autocast, train/precision.py)."""
    from megatron.core.optimizer import OptimizerConfig

    kwargs = dict(lr=opt.lr, min_lr=opt.min_lr, weight_decay=opt.weight_decay, clip_grad=grad_clip,
                  use_distributed_optimizer=True, params_dtype=torch.float32, bf16=False, fp16=False)
    if opt.name == "sgd":
        return OptimizerConfig(optimizer="sgd", sgd_momentum=opt.momentum, **kwargs)
    return OptimizerConfig(optimizer="adam", adam_beta1=opt.betas[0], adam_beta2=opt.betas[1], adam_eps=opt.eps,
                           decoupled_weight_decay=True, **kwargs)


def ddp_config():
    from megatron.core.distributed import DistributedDataParallelConfig

    return DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                         use_distributed_optimizer=True, average_in_collective=False)


def _per_token_config(model, name: str):
    """A copy of the module's TransformerConfig with calculate_per_token_loss (DDP reads it there);
    a user encoder without one borrows the language model's."""
    root = module_roots(model, name)[0]
    config = getattr(root, "config", None)
    if config is None and name != LANG:
        config = getattr(next(iter(root.encoders.values())), "config", None)
    if config is None:
        config = model.mimo_config.language_model_spec.params["config"]
    config = copy.copy(config)
    config.calculate_per_token_loss = True
    return config


class MegatronGrads:
    """DDP + distributed optimizer for every trainable module this rank holds; `views` are what the
    runtime calls its optimizers (lr schedule, checkpoints)."""

    def __init__(self, model, plan: Plan, rank: int, groups, grad_clip: float, timeout_s: float):
        from datetime import timedelta

        from megatron.core.distributed import DistributedDataParallel
        from megatron.core.optimizer import get_megatron_optimizer

        self.model, self.plan, self.rank, self.groups = model, plan, rank, groups
        # ep = this rank alone: created by this rank only, so no world-wide ordering to keep
        ep = dist.new_group([rank], timeout=timedelta(seconds=timeout_s), use_local_synchronization=True)
        self.ddp: Dict[str, List[object]] = {}  # one DDP per interleaved chunk of the module
        self.optimizers: Dict[str, object] = {}
        self.pgs: Dict[str, object] = {}
        for name in plan.modules_on(rank):
            roots = module_roots(model, name)
            if not any(p.requires_grad for root in roots for p in root.parameters()):
                continue  # frozen entirely: no buffers, no optimizer
            pgs = optimizer_groups(groups[name].pgs, ep)
            ddp = [DistributedDataParallel(_per_token_config(model, name), ddp_config(), root, pg_collection=pgs)
                   for root in roots]
            opt = plan.topology.modules[name].optimizer
            self.ddp[name], self.pgs[name] = ddp, pgs
            self.optimizers[name] = get_megatron_optimizer(optimizer_config(opt, grad_clip), ddp, pg_collection=pgs,
                                                           use_gloo_process_groups=False)
        self.views = {name: TorchView([p for p in module_parameters(model, name) if p.requires_grad],
                                      self.optimizers[name], groups[name].pgs.dp_cp, name)
                      for name in self.optimizers}

    def reduce_grads(self, module: str) -> None:
        """The executor's REDUCE: sequence-parallel and tied-embedding gradients first (on the full
        local buffers; sums commute), then DDP's reduction over dp_cp (a reduce-scatter: each rank's
        slice is then complete)."""
        names = list(self.plan.modules) if module == "*" else [module]
        for name in names:
            if name not in self.ddp:
                continue
            pgs = self.groups[name].pgs
            if name == LANG and self.plan.modules[LANG].sequence_parallel:
                _all_reduce_main_grads([p for p in module_parameters(self.model, name)
                                        if p.requires_grad and getattr(p, "sequence_parallel", False)], pgs.tp)
            lm = self.model.language_model
            if name == LANG and self.plan.modules[LANG].pp > 1 and lm.share_embeddings_and_output_weights:
                shared = lm.shared_embedding_or_output_weight()
                if shared is not None and shared.requires_grad:
                    _all_reduce_main_grads([shared], pgs.embd)
            for ddp in self.ddp[name]:
                ddp.finish_grad_sync()

    def norm_and_loss(self, loss_sum: float) -> Tuple[float, Dict[str, float], float]:
        """(global norm, {module: norm}, global loss): one world all-reduce, like optim.global_norm_and_loss."""
        names = list(self.plan.modules)
        buf = torch.zeros(len(names) + 1, dtype=torch.float64)
        for i, name in enumerate(names):
            opt = self.optimizers.get(name)
            if opt is not None:
                opt.prepare_grads()  # this rank's slice of the reduced buffer -> its fp32 main grads
                grads = opt.get_main_grads_for_grad_norm()
                if grads:
                    buf[i] = float(sum(g.detach().double().pow(2).sum() for g in grads))
        buf[-1] = loss_share(self.plan, self.rank, loss_sum)
        dist.all_reduce(buf)
        squares = [float(v) for v in buf[:-1]]
        return math.sqrt(sum(squares)), {n: math.sqrt(v) for n, v in zip(names, squares)}, float(buf[-1])

    def step(self, grad_norm: float, max_norm: float) -> None:
        """Clip every module by the global norm, step, gather the updated slices, zero the buffers."""
        from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

        for name, opt in self.optimizers.items():
            self.views[name].push_learning_rate()
            params = opt.get_parameters()
            if params and max_norm > 0:
                clip_grad_by_total_norm_fp32(params, max_norm=max_norm, total_norm=grad_norm)
            opt.step_with_ready_grads()
        self.zero_grad()

    def zero_grad(self) -> None:
        for name, opt in self.optimizers.items():
            opt.zero_grad()
            for ddp in self.ddp[name]:
                ddp.zero_grad_buffer()


def _all_reduce_main_grads(params: List[torch.nn.Parameter], group) -> None:
    if group is None or dist.get_world_size(group) == 1:
        return
    for p in params:
        dist.all_reduce(p.main_grad, group=group)


class TorchView:
    """A megatron distributed optimizer seen as the torch optimizer the runtime's lr schedule and
    checkpoints read: `param_groups` over the module's model parameters (their `lr` is pushed to
    megatron's groups before each step) and `state[param]` with full-size tensors, assembled by
    `gather_state` before a save and handed back by `scatter_state` after a load (collectives over
    the module's dp_cp group, in parameter order on every rank)."""

    def __init__(self, params: List[torch.nn.Parameter], optimizer, dp_cp_group, name: str):
        self.optimizer, self.group = optimizer, dp_cp_group
        self.param_groups = [{"params": params, "lr": optimizer.param_groups[0]["lr"], "module": name}]
        self.state: Dict[torch.nn.Parameter, Dict[str, torch.Tensor]] = {}

    def push_learning_rate(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.param_groups[0]["lr"]

    def _slice(self, p) -> Tuple[int, int]:
        r = self.optimizer._get_model_param_range_map(p)["param"]
        return r.start, r.end

    def _owned(self, p) -> bool:
        return p in self.optimizer.model_param_group_index_map

    def gather_state(self) -> None:
        """Full exp_avg / exp_avg_sq (or momentum) per parameter from every rank's slice, and the step count."""
        self.state = {}
        for p in self.param_groups[0]["params"]:
            local = self.optimizer._get_main_param_and_optimizer_states(p) if self._owned(p) else {}
            names = sorted(k for k, v in local.items() if k != "param" and torch.is_tensor(v) and v.dim() > 0)
            names = _agree(names, self.group)
            full = {}
            for key in names:
                flat = torch.zeros(p.numel(), dtype=torch.float32, device=p.device)
                if self._owned(p):
                    start, end = self._slice(p)
                    flat[start:end] = local[key].view(-1)
                dist.all_reduce(flat, group=self.group)  # the slices partition the parameter
                full[key] = flat.view(p.shape)
            step = _inner_step(self.optimizer)
            if step is not None and full:
                full["step"] = torch.tensor(step, dtype=torch.float32)
            self.state[p] = full

    def scatter_state(self) -> None:
        """Each rank keeps its slices of the full state a checkpoint load put into `state`."""
        if not any(self.state.values()):
            return
        if not self.optimizer.optimizer.state:
            self.optimizer._init_optimizer_states_with_dummy_values()
        for p, full in self.state.items():
            if not full or not self._owned(p):
                continue
            start, end = self._slice(p)
            current = self.optimizer._get_main_param_and_optimizer_states(p)
            tensors = {"param": current["param"]}
            for key, value in current.items():
                if key != "param" and torch.is_tensor(value) and value.dim() > 0 and key in full:
                    tensors[key] = full[key].reshape(-1)[start:end].to(value.device, value.dtype)
                elif key != "param":
                    tensors[key] = value
            self.optimizer._set_main_param_and_optimizer_states(p, tensors)
        step = next((float(f["step"]) for f in self.state.values() if "step" in f), None)
        if step is not None:
            for s in self.optimizer.optimizer.state.values():
                if "step" in s:
                    s["step"] = torch.full_like(s["step"], step) if torch.is_tensor(s["step"]) else step
        self.optimizer.reload_model_params()


def _agree(names: List[str], group) -> List[str]:
    """The state names every rank of `group` uses for this parameter (a rank owning no slice has none)."""
    gathered = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, names, group=group)
    return sorted({n for g in gathered for n in g})


def _inner_step(optimizer):
    for s in optimizer.optimizer.state.values():
        if "step" in s:
            return float(s["step"])
    return None
