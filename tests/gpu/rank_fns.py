"""Rank functions of tests/gpu (spawned processes import them by name)."""

from types import SimpleNamespace

import torch
import torch.distributed as dist


class FakeDistributedOptimizer:
    """The part of megatron's DistributedOptimizer interface TorchView reads, over CPU tensors: each
    rank owns a contiguous slice of each parameter (or none) and keeps its Adam state for it."""

    def __init__(self, ranges, rank: int):
        self.ranges = ranges  # {param: (start, end)} of the slices this rank owns
        owned = list(ranges)
        self.model_param_group_index_map = {p: (0, i) for i, p in enumerate(owned)}
        self.main = {}
        for p, (s, e) in ranges.items():
            idx = torch.arange(s, e, dtype=torch.float32)
            self.main[p] = {"param": p.detach().view(-1)[s:e], "exp_avg": idx + 100, "exp_avg_sq": idx + 1000}
        self.optimizer = SimpleNamespace(state={id(p): {"step": torch.tensor(3.0)} for p in owned})
        self.param_groups = [{"lr": 0.5}, {"lr": 0.5}]
        self.reloaded = False

    def _get_model_param_range_map(self, p):
        s, e = self.ranges[p]
        return {"param": SimpleNamespace(start=s, end=e)}

    def _get_main_param_and_optimizer_states(self, p):
        return dict(self.main[p])

    def _set_main_param_and_optimizer_states(self, p, tensors):
        for key, value in self.main[p].items():
            value.copy_(tensors[key])

    def _init_optimizer_states_with_dummy_values(self):
        raise AssertionError("state exists already")

    def reload_model_params(self):
        self.reloaded = True


def torch_view_round_trip(rank: int, world_size: int):
    """a (10 elements, 2x5) split 6 | 4 over the two ranks; b (4) owned by rank 1 alone."""
    from mimo_runtime.train.megatron_ddp import TorchView

    a = torch.nn.Parameter(torch.zeros(2, 5))
    b = torch.nn.Parameter(torch.zeros(4))
    ranges = {a: (0, 6)} if rank == 0 else {a: (6, 10), b: (0, 4)}
    opt = FakeDistributedOptimizer(ranges, rank)
    view = TorchView([a, b], opt, dist.group.WORLD, "language")
    view.gather_state()
    gathered = {name: {k: v.clone() for k, v in view.state[p].items()} for name, p in (("a", a), ("b", b))}
    view.param_groups[0]["lr"] = 0.25
    view.push_learning_rate()
    lrs = [g["lr"] for g in opt.param_groups]
    # a checkpoint load writes full tensors into view.state; each rank keeps its slices
    for p in (a, b):
        view.state[p]["exp_avg"] = -torch.arange(p.numel(), dtype=torch.float32).view(p.shape)
        view.state[p]["step"] = torch.tensor(7.0)
    view.scatter_state()
    mine = {("a" if p is a else "b"): opt.main[p]["exp_avg"].clone() for p in ranges}
    steps = [float(s["step"]) for s in opt.optimizer.state.values()]
    return gathered, lrs, mine, steps, opt.reloaded
