"""Optimizers per module (torch.optim on CPU) and the step that spans every module.

Each module gets its own optimizer from its resolved `optimizer` section (AdamW or SGD), with two
parameter groups: weight decay, and the `no_weight_decay` patterns. Frozen parameters
(requires_grad False) are in no group, so they never get optimizer state. The learning rate of
every group is set from the schedule before each step (lr_schedule.py).

The global gradient norm covers all modules on all ranks: each rank adds the squares of the
gradient elements it alone is responsible for (grads.counts_toward_norm), and one world all-reduce
also carries this rank's share of the loss, so every rank ends the step knowing both. The pieces
live on the compute device (a CPU tensor has no place on an NCCL group) and reach the host once,
after that all-reduce: clipping, the non-finite check and the metrics read the same numbers.
"""

import math
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan
from mimo_runtime.topology.schema import Optimizer
from mimo_runtime.train.grads import clip_, counts_toward_norm, sum_of_squares
from mimo_runtime.train.lr_schedule import lr_at
from mimo_runtime.train.params import matches, named_module_parameters


def module_parameters(model, name: str) -> List[torch.nn.Parameter]:
    """Parameters of one module on this rank (empty if the rank does not hold it)."""
    if name == LANG:
        chunks = model.language_modules() if hasattr(model, "language_modules") else []
        return [p for lm in chunks for p in lm.parameters()]
    sub = model.modality_submodules
    if name not in sub:
        return []
    chunks = model.encoder_chunks(name) if hasattr(model, "encoder_chunks") else [sub[name]]
    return [p for c in chunks for p in c.parameters()]


def param_groups(model, name: str, opt: Optimizer) -> List[dict]:
    """The trainable parameters of module `name`: a decay group and a no-decay group (empty ones left out)."""
    decay, no_decay = [], []
    for canonical, (p, *_rest) in named_module_parameters(model, name).items():
        if p.requires_grad:
            (no_decay if matches(canonical, name, opt.no_weight_decay) else decay).append(p)
    groups = [{"params": decay, "weight_decay": opt.weight_decay, "module": name},
              {"params": no_decay, "weight_decay": 0.0, "module": name}]
    return [g for g in groups if g["params"]]


def make_optimizer(groups: List[dict], opt: Optimizer) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum)
    return torch.optim.AdamW(groups, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)


def build_optimizers(model, plan: Plan, rank: int) -> Dict[str, torch.optim.Optimizer]:
    """One optimizer per module this rank holds that has trainable parameters here."""
    out = {}
    for name in plan.modules_on(rank):
        opt = plan.topology.modules[name].optimizer
        groups = param_groups(model, name, opt)
        if groups:
            out[name] = make_optimizer(groups, opt)
    return out


def set_learning_rates(optimizers: Dict[str, torch.optim.Optimizer], plan: Plan, step: int) -> None:
    for name, optimizer in optimizers.items():
        lr = lr_at(plan.topology.modules[name].optimizer, step)
        for group in optimizer.param_groups:
            group["lr"] = lr


def _norm_params(model, plan: Plan, rank: int, name: str) -> List[torch.nn.Parameter]:
    """`name`'s parameters on this rank that count toward the global norm (each shard counted once)."""
    lang = plan.modules.get(LANG)
    duplicate = None
    if (name == LANG and lang.pp > 1 and lang.coords(rank).pp == lang.pp - 1
            and model.language_model.share_embeddings_and_output_weights):
        # the last stage's copy of a tied embedding counts once, on the first stage
        duplicate = model.shared_embedding_or_output_weight()
    c = plan.modules[name].coords(rank)
    dp_cp_rank = c.dp * plan.modules[name].cp + c.cp
    return [p for p in module_parameters(model, name)
            if p.requires_grad and counts_toward_norm(p, c.tp, dp_cp_rank, p is duplicate)]


Scalar = Union[float, torch.Tensor]


def loss_share(plan: Plan, rank: int, loss_sum: Scalar) -> Scalar:
    """Only TP rank 0 of the last language stage reports: TP ranks hold the same loss."""
    lang = plan.modules[LANG]
    if not lang.holds(rank):
        return 0.0
    c = lang.coords(rank)
    return loss_sum if c.pp == lang.pp - 1 and c.tp == 0 else 0.0


def _device(model) -> torch.device:
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def global_norm_and_loss(model, plan: Plan, rank: int, loss_sum: Scalar) -> Tuple[float, Dict[str, float], float]:
    """(global gradient norm, {module: its gradient norm}, global loss): one all-reduce on every rank."""
    names = list(plan.modules)
    held = set(plan.modules_on(rank))
    device = _device(model)
    buf = torch.stack([sum_of_squares(_norm_params(model, plan, rank, n), device) if n in held
                       else torch.zeros((), dtype=torch.float64, device=device) for n in names]
                      + [torch.as_tensor(loss_share(plan, rank, loss_sum), dtype=torch.float64, device=device)])
    dist.all_reduce(buf)
    *squares, loss = buf.tolist()  # the step's one host read
    return math.sqrt(sum(squares)), {n: math.sqrt(v) for n, v in zip(names, squares)}, loss


def step_optimizers(model, optimizers: Dict[str, torch.optim.Optimizer], grad_norm: float, max_norm: float) -> None:
    params = [p for opt in optimizers.values() for g in opt.param_groups for p in g["params"]]
    clip_(params, grad_norm, max_norm)
    for opt in optimizers.values():
        opt.step()
    model.zero_grad(set_to_none=False)  # keep the gradient buffers (as megatron's DDP does): no re-allocation per step


def global_loss(plan: Plan, rank: int, loss_sum: Scalar, device: Optional[torch.device] = None) -> float:
    """Forward-only steps (evaluation) reduce just the loss (on `device`, the compute's)."""
    buf = torch.as_tensor(loss_share(plan, rank, loss_sum), dtype=torch.float64, device=device).reshape(1)
    dist.all_reduce(buf)
    return buf.item()
