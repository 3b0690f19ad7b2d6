"""Real gloo processes (3 ranks, one launch): TP, encoder PP and language PP against the reference.

Every rank also builds the colocated single-process reference (on a 1-rank group of its own) and
compares its slice: initial values, logits, loss, gradients. Stage hand-offs use plain
send/recv, as a minimal stand-in for the executor and bridge.
"""

import torch
import torch.distributed as dist
from megatron.core.process_groups_config import ProcessGroupCollection

from mimo_runtime.groups import build_module_groups
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.model import build_mimo_model, build_model, global_parameters, masked_token_loss_sum, shard_of
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import topology_from_dict
from tests.model.fakes import SEED, batch, checkpoint_layout, indices, merge_layouts, no_parallel_state_or_cuda

WORLD = 3


def _plan(model, modules, placement="separate"):
    return make_plan(topology_from_dict({"model": model, "placement": placement, "modules": modules,
                                         "train": {"global_batch": 4, "micro_batch": 2}}))


SCENARIOS = {  # name: (preset, topology modules, placement)
    "colocated_tp2": ("tiny-avlm", {n: {"kind": k, "ranks": 2, "parallel": {"tp": 2}} for n, k in (
        ("images", "encoder"), ("audio", "encoder"), ("language", "language"))}, "colocated"),
    "encoder_pp2": ("tiny-vlm", {"images": {"kind": "encoder", "ranks": 2, "parallel": {"pp": 2}},
                                 "language": {"kind": "language", "ranks": 1}}, "separate"),
    "language_pp2": ("tiny-vlm", {"images": {"kind": "encoder", "ranks": 1},
                                  "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2}}}, "separate"),
}


def _send(t: torch.Tensor, dst: int) -> None:
    header = torch.tensor([t.dim(), *t.shape] + [0] * (4 - t.dim()), dtype=torch.long)
    dist.send(header, dst)
    if t.numel():
        dist.send(t.detach().contiguous(), dst)


def _recv(src: int) -> torch.Tensor:
    header = torch.zeros(5, dtype=torch.long)
    dist.recv(header, src)
    t = torch.zeros(header[1:1 + int(header[0])].tolist())
    if t.numel():
        dist.recv(t, src)
    return t


def _excess(a: torch.Tensor, b: torch.Tensor) -> float:
    """<= 0 when a matches b within atol 1e-5 + rtol 1e-4."""
    return float(((a.detach() - b.detach()).abs() - 1e-5 - 1e-4 * b.detach().abs()).max()) if a.numel() else 0.0


class Reference:
    """The colocated model on this rank alone; its loss sum, logits and gradients per microbatch."""

    def __init__(self, preset: str, pgs: ProcessGroupCollection):
        self.model = build_mimo_model(preset, SEED, {}, {n: pgs for n in ("images", "audio", "language")})
        self.params = {n: p for n, (p, *_) in global_parameters(self.model).items()}
        self.init = {n: p.detach().clone() for n, p in self.params.items()}
        self.logits = []

    def run(self, microbatches):
        total = 0.0
        for tokens, inputs in microbatches:
            logits, mask = self.model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], None,
                                      inputs)
            self.logits.append(logits.detach())
            total = total + masked_token_loss_sum(logits, tokens["labels"], mask, None)
        total.backward()
        self.grads = {n: p.grad.clone() for n, p in self.params.items()}
        self.loss = float(total)


def _single_rank_pgs(rank: int) -> ProcessGroupCollection:
    mine = None
    for r in range(WORLD):  # every rank creates every group, in order
        g = dist.new_group([r])
        mine = g if r == rank else mine
    return ProcessGroupCollection(tp=mine, cp=mine, dp=mine, pp=mine, dp_cp=mine, tp_cp=mine, mp=mine,
                                  tp_dp_cp=mine, embd=mine, pos_embd=mine)


def _compare_params(model, ref: Reference, out: dict, tied_sum_group=None) -> None:
    """Initial values and gradients of every parameter against the reference's slice."""
    for name, (p, pdim, tp_rank, tp_size) in global_parameters(model).items():
        out[f"init {name}"] = _excess(p, shard_of(ref.init[name], pdim, tp_rank, tp_size))
        grad = p.grad.clone()
        if tied_sum_group is not None and name == "language_model.embedding.word_embeddings.weight":
            dist.all_reduce(grad, group=tied_sum_group)  # first + last stage copies, as the executor does
        out[f"grad {name}"] = _excess(grad, shard_of(ref.grads[name], pdim, tp_rank, tp_size))


def _colocated_tp2(rank, plan, groups, ref, microbatches, out):
    model = build_model(plan, groups, rank, SEED)
    tp = groups["language"].pgs.tp
    total = 0.0
    for k, (tokens, inputs) in enumerate(microbatches):
        logits, mask = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"], None, inputs)
        out[f"logits mb{k}"] = _excess(logits, shard_of(ref.logits[k], 2, tp.rank(), 2))
        total = total + masked_token_loss_sum(logits, tokens["labels"], mask, tp)
    out["loss"] = _excess(total, torch.tensor(ref.loss))
    total.backward()
    _compare_params(model, ref, out)
    tokens, inputs = microbatches[0]
    padded, _ = model(tokens["input_ids"], tokens["position_ids"], None, None, tokens["labels"], inputs)
    lengths = [int((row != 0).sum()) for row in tokens["input_ids"]]
    cat = {k: torch.cat([v[b, :n] for b, n in enumerate(lengths)])[None] for k, v in tokens.items()}
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    packed, _ = model(cat["input_ids"], None, None, None, cat["labels"], inputs, packing_kwargs={"cu_seqlens_q": cu})
    per_token = (packed * cat["loss_mask"])[0]
    out["packed vs padded"] = _excess(torch.stack([per_token[cu[i]:cu[i + 1]].sum() for i in range(len(lengths))]),
                                      (padded * tokens["loss_mask"]).sum(1))
    return model


def _encoder_pp2(rank, plan, groups, ref, microbatches, out):
    model = build_model(plan, groups, rank, SEED)
    for k, (tokens, inputs) in enumerate(microbatches):
        if rank == 0:
            h = model(None, modality_inputs=inputs)[0]["images"]
            _send(h, 1)
            torch.autograd.backward(h, _recv(1))
        elif rank == 1:
            h = _recv(0).requires_grad_()
            model.set_input_tensor({"images": h})
            rows = model(None)[0]["images"]
            _send(rows, 2)
            torch.autograd.backward(rows, _recv(2))
            _send(h.grad, 0)
        else:
            rows = _recv(1).requires_grad_()
            model.set_input_tensor({"images": rows})
            logits, mask = model(tokens["input_ids"], tokens["position_ids"], None, tokens["loss_mask"])
            out[f"logits mb{k}"] = _excess(logits, ref.logits[k])
            masked_token_loss_sum(logits, tokens["labels"], mask, None).backward()
            _send(rows.grad, 1)
    _compare_params(model, ref, out)
    return model


def _language_pp2(rank, plan, groups, ref, microbatches, out):
    model = build_model(plan, groups, rank, SEED)
    for k, (tokens, inputs) in enumerate(microbatches):
        if rank == 0:
            rows = model(None, modality_inputs=inputs)[0]["images"]
            _send(rows, 1)
            torch.autograd.backward(rows, _recv(1))
        elif rank == 1:
            rows = _recv(0).requires_grad_()
            model.set_input_tensor({"images": rows})
            h = model(tokens["input_ids"], tokens["position_ids"])[0]["language"]
            _send(h, 2)
            torch.autograd.backward(h, _recv(2))
            _send(rows.grad, 0)
        else:
            h = _recv(1).requires_grad_()
            model.set_input_tensor({"language": h})
            logits, mask = model(None, loss_mask=tokens["loss_mask"])
            out[f"logits mb{k}"] = _excess(logits, ref.logits[k])
            masked_token_loss_sum(logits, tokens["labels"], mask, None).backward()
            _send(h.grad, 1)
    embd = groups["language"].pgs.embd if rank > 0 else None
    _compare_params(model, ref, out, tied_sum_group=embd)
    return model


RUNNERS = {"colocated_tp2": _colocated_tp2, "encoder_pp2": _encoder_pp2, "language_pp2": _language_pp2}


def _worker(rank, world):
    results = {}
    with no_parallel_state_or_cuda():
        single = _single_rank_pgs(rank)
        for name, (preset, modules, placement) in SCENARIOS.items():
            plan = _plan(preset, modules, placement)
            groups = build_module_groups(plan, 30)
            with_items = indices(preset, 2, with_items=True)
            without = indices(preset, 2, with_items=False)
            microbatches = [batch(preset, with_items), batch(preset, without)]
            ref = Reference(preset, single)
            ref.run(microbatches)
            out = {}
            model = RUNNERS[name](rank, plan, groups, ref, microbatches, out) if plan.modules_on(rank) else None
            results[name] = {"checks": out, "layout": checkpoint_layout([model]) if model is not None else {},
                             "reference_layout": checkpoint_layout([ref.model])}
    return results


def test_tp_and_pp_ranks_hold_and_compute_slices_of_the_colocated_model():
    results = spawn(_worker, WORLD, timeout_s=170, collective_timeout_s=60)
    for name in SCENARIOS:
        checks = {}
        for rank, r in enumerate(results):
            checks.update({f"rank {rank} {k}": v for k, v in r[name]["checks"].items()})
        assert any(k.endswith("logits mb1") for k in checks), f"{name}: no rank computed logits"
        bad = {k: v for k, v in checks.items() if not v <= 0}
        assert not bad, f"{name}: mismatches vs the reference (excess over tolerance): {bad}"
        union = merge_layouts(r[name]["layout"] for r in results)
        assert union == results[0][name]["reference_layout"], f"{name}: checkpoint keys differ from the reference"
