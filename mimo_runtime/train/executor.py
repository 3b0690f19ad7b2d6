"""Executor: runs one rank's action list from the schedule, exactly as listed.

Each action is one call below; state between them is per microbatch (received inputs, outputs kept
for backward). Sends are posted asynchronously and completed at the end of the step; receives
block (with the configured timeout), which is the semantics the schedule validator proves
deadlock-free.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from mimo_runtime.comm import Bridge, CommStats, Outbox, recv_tensors, send_tensors
from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan
from mimo_runtime.train.feed import Feeder
from mimo_runtime.train.grads import all_reduce_grads
from mimo_runtime.train.optim import module_parameters

COLOCATED = "*"


@dataclass
class StepState:
    step: int
    train: bool
    inputs: Dict[int, Dict[str, torch.Tensor]] = field(default_factory=dict)
    outputs: Dict[int, torch.Tensor] = field(default_factory=dict)
    out_grads: Dict[int, torch.Tensor] = field(default_factory=dict)
    loss_sum: float = 0.0  # this rank's share of the global loss (already divided by global tokens)
    correct: int = 0
    counted: int = 0


class Executor:
    def __init__(self, plan: Plan, groups, model, rank: int, feeder: Feeder, loss_fn: Callable,
                 timeout_s: float, trainable: Dict[str, bool], on_opt_step: Optional[Callable] = None):
        self.plan, self.groups, self.model, self.rank = plan, groups, model, rank
        self.feeder, self.loss_fn, self.timeout_s = feeder, loss_fn, timeout_s
        self.trainable = trainable  # module -> whether gradients flow into it at all
        self.on_opt_step = on_opt_step
        self.stats, self.outbox = CommStats(), Outbox(timeout_s)
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.trace: List[Tuple[str, float, float]] = []
        self.fault = _fault_from_env(rank)
        self.bridges = {enc: Bridge(plan.modules[enc], plan.language, plan.micro_batch * plan.language.dp, rank,
                                    self.outbox, self.stats, timeout_s) for enc, _ in plan.edges}
        self.hidden = model.mimo_config.language_model_spec.params["config"].hidden_size

    # ---- driving ----
    def run_step(self, actions, step: int, train: bool = True) -> StepState:
        st = StepState(step, train)
        for i, a in enumerate(actions):
            if self.fault is not None and self.fault[0] == step and i == 1:
                _inject(self.fault[1], self.rank)
            t0 = time.perf_counter()
            getattr(self, "_" + a.kind.lower())(a, st)
            self.trace.append((str(a), t0, time.perf_counter()))
        self.outbox.wait()
        return st

    # ---- helpers ----
    def _module(self, name: str):
        return self.plan.modules[name]

    def _key(self, module: str) -> str:
        return module

    def _peer_rank(self, a, peer) -> int:
        """Same (tp, cp, dp) coordinates on the neighbouring pipeline stage."""
        m = self._module(a.module)
        c = m.coords(self.rank)
        return m.rank(tp=c.tp, cp=c.cp, dp=c.dp, pp=peer[1])

    def _tokens(self, a, st: StepState):
        return self.feeder.tokens(st.step, a.mb, self._module(LANG if a.module == COLOCATED else a.module), self.rank)

    def _lang_rows_per_sample(self, enc: str, tokens) -> List[int]:
        special = self.model.special_token_ids[enc]
        return (tokens["input_ids"] == special).sum(dim=1).tolist()

    def _needs_grad(self, module: str, st: StepState) -> bool:
        return st.train and self.trainable.get(module, True)

    # ---- receives and sends ----
    def _recv_f(self, a, st: StepState) -> None:
        pmod, _ = a.peer
        if pmod == a.module:
            key = self._key(a.module)
            got = recv_tensors([key], self._peer_rank(a, a.peer), self.dtype, self.device, self.stats,
                               self.timeout_s)[key]
            grad = st.train and (a.module == LANG or not self._module(a.module).frozen)
        else:
            tokens = self._tokens(a, st)
            got = self.bridges[pmod].recv_forward(self._lang_rows_per_sample(pmod, tokens), self.hidden,
                                                  self.dtype, self.device)
            grad = self._needs_grad(pmod, st)
        st.inputs.setdefault(a.mb, {})[pmod if pmod != a.module else self._key(a.module)] = \
            got.requires_grad_(grad)

    def _send_f(self, a, st: StepState) -> None:
        out = st.outputs[a.mb]
        pmod, _ = a.peer
        if pmod == a.module:
            send_tensors({self._key(a.module): out}, self._peer_rank(a, a.peer), self.outbox, self.stats)
        else:
            self.bridges[a.module].send_forward(out, self.feeder.rows_per_sample(st.step, a.mb, a.module, self.rank))
        if not st.train:
            st.outputs.pop(a.mb)

    def _recv_b(self, a, st: StepState) -> None:
        pmod, _ = a.peer
        if pmod == a.module:
            key = self._key(a.module)
            g = recv_tensors([key], self._peer_rank(a, a.peer), self.dtype, self.device, self.stats,
                             self.timeout_s)[key]
        else:
            rows = self.feeder.rows_per_sample(st.step, a.mb, a.module, self.rank)
            g = self.bridges[a.module].recv_backward(rows, self.hidden, self.dtype, self.device)
        st.out_grads[a.mb] = g

    def _send_b(self, a, st: StepState) -> None:
        pmod, _ = a.peer
        key = self._key(a.module) if pmod == a.module else pmod
        x = st.inputs[a.mb].pop(key)
        g = x.grad if x.grad is not None else torch.zeros_like(x)
        if pmod == a.module:
            send_tensors({key: g}, self._peer_rank(a, a.peer), self.outbox, self.stats)
        else:
            tokens = self._tokens(a, st)
            self.bridges[pmod].send_backward(g, self._lang_rows_per_sample(pmod, tokens))

    # ---- compute ----
    def _f(self, a, st: StepState) -> None:
        with torch.set_grad_enabled(st.train):
            if a.module == COLOCATED:
                out = self._forward_colocated(a, st)
            elif a.module == LANG:
                out = self._forward_language(a, st)
            else:
                out = self._forward_encoder(a, st)
        st.outputs[a.mb] = out

    def _forward_encoder(self, a, st: StepState) -> torch.Tensor:
        m = self._module(a.module)
        if m.coords(self.rank).pp == 0:
            self.model.set_input_tensor(None)
            inputs = {a.module: self.feeder.modality_inputs(st.step, a.mb, a.module, self.rank)}
        else:
            self.model.set_input_tensor(st.inputs[a.mb])
            inputs = None
        out, _ = self.model(input_ids=None, modality_inputs=inputs)
        return out[a.module]

    def _forward_language(self, a, st: StepState) -> torch.Tensor:
        m = self._module(LANG)
        tokens = self._tokens(a, st)
        self.model.set_input_tensor(st.inputs.get(a.mb, {}))
        out, _ = self.model(input_ids=tokens["input_ids"], position_ids=tokens["position_ids"],
                            attention_mask=None, loss_mask=tokens["loss_mask"], labels=None)
        if m.coords(self.rank).pp < m.pp - 1:
            return out[LANG]
        return self._loss(out, tokens, st, self.groups[LANG].pgs.tp)

    def _forward_colocated(self, a, st: StepState) -> torch.Tensor:
        tokens = self._tokens(a, st)
        self.model.set_input_tensor(None)
        logits, _ = self.model(input_ids=tokens["input_ids"], position_ids=tokens["position_ids"],
                               attention_mask=None, loss_mask=tokens["loss_mask"], labels=None,
                               modality_inputs=self.feeder.all_modality_inputs(st.step, a.mb, self.rank))
        return self._loss(logits, tokens, st, self.groups[LANG].pgs.tp)

    def _loss(self, logits, tokens, st: StepState, tp_group) -> torch.Tensor:
        total = self.loss_fn(logits, tokens["labels"], tokens["loss_mask"], tp_group)
        loss = total / self.feeder.loss_tokens(st.step)
        st.loss_sum += float(loss.detach())
        return loss

    def _b(self, a, st: StepState) -> None:
        out = st.outputs.pop(a.mb)
        grad = st.out_grads.pop(a.mb, None)
        if out.requires_grad:
            torch.autograd.backward(out, grad_tensors=grad)

    # ---- end of step ----
    def _reduce_grads(self, a, st: StepState) -> None:
        names = list(self.plan.modules) if a.module == COLOCATED else [a.module]
        for name in names:
            pgs = self.groups[name].pgs
            all_reduce_grads(module_parameters(self.model, name), pgs.dp_cp)
            if name == LANG and self._module(LANG).pp > 1:
                shared = self.model.language_model.shared_embedding_or_output_weight()
                if shared is not None and shared.grad is not None:
                    all_reduce_grads([shared], pgs.embd)

    def _opt_step(self, a, st: StepState) -> None:
        self.outbox.wait()
        if self.on_opt_step is not None:
            self.on_opt_step(st)


def _fault_from_env(rank: int) -> Optional[Tuple[int, str]]:
    """`MIMO_INJECT_FAULT=RANK:STEP[:exit|raise|hang]` kills, fails or hangs one rank mid-step (tests)."""
    spec = os.environ.get("MIMO_INJECT_FAULT")
    if not spec:
        return None
    parts = spec.split(":")
    if int(parts[0]) != rank:
        return None
    return int(parts[1]), parts[2] if len(parts) > 2 else "exit"


def _inject(kind: str, rank: int) -> None:
    if kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank}")
    if kind == "hang":
        time.sleep(10_000)
    os._exit(17)
