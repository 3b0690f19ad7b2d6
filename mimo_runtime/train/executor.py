"""Executor: runs one rank's action list from the schedule, exactly as listed.

Each action kind is one method below; state between actions is per (chunk, microbatch) (received
inputs, outputs kept for backward; the chunk is the virtual pipeline stage of an interleaved list).
Zero-bubble lists split a backward into B (input gradients) and W (weight gradients, computed by
`compute.weight_grads` from what B's backward deferred, model/weight_grad.py). Given the rank's lowered program (comm/lowering.py), the executor runs its
compute actions in order and posts exactly its p2p groups, one after another (comm/p2p_groups.py),
every message of known shape so no header travels: that is the order schedule/nccl.py proves
deadlock-free under NCCL, and `strict` (or MIMO_P2P_STRICT=1) makes gloo block the same way. Without a
program (bare lists, the benchmark chains) sends are posted asynchronously and completed at the end of
the step, receives block with the configured timeout (the async validator's semantics), and
stage-to-stage messages of known shape between ranks of one host go through shared memory
(comm/shm.py) when the transport allows it. What a forward computes is delegated to `compute`
(mimo_compute.MimoCompute for MimoModel), so this file knows nothing about models.

Microbatch ids of a list may run past the step (schedule/steps.py): id i is microbatch i % m of
step `step + i // m`. When a training list works ahead (a frozen encoder leading the language
pipeline), the forwards it computed for the next step and has not sent yet are kept and handed to
the next training call of that step (`carried`).
"""

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch.autograd.variable import Variable

from mimo_runtime.comm import Bridge, CommStats, Outbox, recv_tensors, send_tensors, shm
from mimo_runtime.comm.inbox import Inbox
from mimo_runtime.comm.p2p_groups import GroupTransport
from mimo_runtime.comm.routes import relayed
from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan
from mimo_runtime.train.memory import ActivationMeter


@dataclass
class StepState:
    step: int
    train: bool
    inputs: Dict[Tuple[int, int], Dict[str, torch.Tensor]] = field(default_factory=dict)  # (chunk, mb) ->
    outputs: Dict[Tuple[int, int], torch.Tensor] = field(default_factory=dict)
    out_grads: Dict[Tuple[int, int], torch.Tensor] = field(default_factory=dict)
    out_shapes: Dict[Tuple[int, int], torch.Size] = field(default_factory=dict)  # outputs freed once sent
    # this rank's share of the global loss (already divided by global tokens); a device scalar once a loss ran
    loss_sum: Union[float, torch.Tensor] = 0.0


class Executor:
    def __init__(self, plan: Plan, rank: int, compute, timeout_s: float, trainable: Dict[str, bool],
                 on_opt_step: Optional[Callable] = None, transport: Optional[str] = None,
                 strict: Optional[bool] = None, hosts: Optional[List[str]] = None):
        self.plan, self.rank, self.compute, self.timeout_s = plan, rank, compute, timeout_s
        self.trainable = trainable  # module -> whether gradients flow into it at all
        self.on_opt_step = on_opt_step
        self.stats, self.outbox = CommStats(), Outbox(timeout_s)
        self.local = self._connect_local(transport or os.environ.get("MIMO_P2P_TRANSPORT", "auto"))
        # what every wait calls to keep queued shared-memory sends moving (comm/p2p.py wait_work)
        self.progress = None if self.local is None else self.local.progress
        self.inbox = Inbox(self.stats, timeout_s, progress=self.progress)
        if strict is None:
            strict = os.environ.get("MIMO_P2P_STRICT", "0") == "1"
        self.groups = GroupTransport(rank, self.stats, timeout_s, strict, getattr(compute, "device", None))
        self.trace: List[Tuple[str, float, float]] = []  # (action, start, end) in time.perf_counter
        self.fault = _fault_from_env(rank)
        self.memory = ActivationMeter()  # activation_peak_mb (train/memory.py)
        # (step, {(chunk, mb): output}, {(chunk, mb): shape of an output freed once sent}) computed ahead
        self.ahead: Optional[Tuple[int, Dict[Tuple[int, int], torch.Tensor], Dict[Tuple[int, int], torch.Size]]] = None
        # `hosts` (each rank's host key) must be those the program was lowered with: the relays match
        self.bridges = {enc: Bridge(plan.modules[enc], plan.language, plan.micro_batch * plan.language.dp, rank,
                                    self.outbox, self.stats, timeout_s, self.progress, hosts, self.groups)
                        for enc, _ in plan.edges}
        self._relaying: Dict = {}  # bridge receive action -> [(route, block)] this rank passes on (relays)
        if hasattr(compute, "attach"):
            compute.attach(self.bridges)

    def carried(self, step: int) -> bool:
        """Whether the previous training call computed forwards of `step` ahead (a "steady" list may run)."""
        return self.ahead is not None and self.ahead[0] == step

    def run_step(self, actions, step: int, train: bool = True, program=None, released=None) -> StepState:
        """Run `actions`; with `program` (this rank's lowering of them, comm/lowering.py) post exactly its
        p2p groups, one after another, instead of each action's messages as it comes. `released`
        (comm/release.py, of what runs: the program or the list) completes each send as soon as a later
        message proves its receiver took it, instead of at the end of the step."""
        st = StepState(step, train)
        if hasattr(self.compute, "begin_step"):  # a collective over the world (mimo_compute: the loss denominator)
            self.compute.begin_step(step)
        if train:
            if self.carried(step):
                st.outputs.update(self.ahead[1])
                st.out_shapes.update(self.ahead[2])
            self.ahead = None
        if program is None:
            self._post_receives_early(actions, st)
        self.memory.start_step()
        for i, a in enumerate(actions if program is None else program):
            if self.fault is not None and self.fault[0] == step and i == 1:
                _inject(self.fault[1], self.rank)
            t0 = time.perf_counter()
            self.outbox.item = i
            if program is not None and not hasattr(a, "kind"):
                if a.within is None:  # an exchange inside a colocated forward posts itself
                    self._group(a, st)
                    t1 = time.perf_counter()
                    self.trace += [(str(action), t0, t1) for action, _ in a.messages]  # traced as its actions
            else:
                getattr(self, "_" + a.kind.lower())(a, st)
                self.trace.append((str(a), t0, time.perf_counter()))
            if released and i in released:
                self.outbox.release(released[i])
                self.groups.release(released[i])
            self.memory.observe(self._pending_sends())
        self._complete_sends()
        m = self.plan.num_microbatches
        if train and any(a.mb >= m for a in actions):  # the list worked ahead (what it has not sent yet, if any)
            self.ahead = (step + 1, {(c, mb - m): out for (c, mb), out in st.outputs.items() if mb >= m},
                          {(c, mb - m): shape for (c, mb), shape in st.out_shapes.items() if mb >= m})
        return st

    def _at(self, a, st: StepState) -> Tuple[int, int]:
        """(step, microbatch) of an action: ids past the step's m belong to the steps after it."""
        m = self.plan.num_microbatches
        return st.step + a.mb // m, a.mb % m

    def _pending_sends(self):
        """Buffers of sends not complete yet (activation_peak_mb counts them)."""
        yield from self.outbox.buffers()
        yield from self.groups.pending()

    def _complete_sends(self) -> None:
        if self.local is not None:
            self.local.flush()
        self.outbox.wait()
        self.groups.drain()

    def _connect_local(self, transport: str) -> Optional[shm.LocalChannels]:
        """Shared-memory rings to this rank's pipeline neighbours (collective: every rank calls it).

        Only for computes that declare their stage-to-stage shapes (`p2p_shape`); the same on every
        rank, so every rank joins the collective or none does. A ring's slot fits the largest message
        (`compute.p2p_max_shape(module)`, else the shape of step 0's first microbatch); a larger one
        travels through torch.distributed, which both sides know from its shape.
        """
        known = getattr(self.compute, "p2p_shape", None)
        if known is None or getattr(self.compute, "device", torch.device("cpu")).type != "cpu":
            return None  # GPU tensors travel over NCCL: a host ring would add two copies and a sync
        largest = getattr(self.compute, "p2p_max_shape", lambda name: known(name, 0, 0))
        inbound, outbound = {}, set()
        for name in self.plan.modules_on(self.rank):
            m = self.plan.modules[name]
            c = m.coords(self.rank)
            shape = largest(name) if m.pp > 1 else None
            if shape is None:
                continue
            nbytes = math.prod(shape) * self._wire(name).itemsize
            for pp in (c.pp - 1, c.pp + 1):
                if 0 <= pp < m.pp:
                    peer = m.rank(tp=c.tp, cp=c.cp, dp=c.dp, pp=pp)
                    inbound[peer] = max(inbound.get(peer, 0), nbytes)
                    outbound.add(peer)
        return shm.connect(inbound, sorted(outbound), self.stats, self.timeout_s, transport)

    def _shm(self, a, shape: Optional[Tuple[int, ...]], sending: bool) -> bool:
        """Whether this stage-to-stage transfer goes through shared memory (both sides decide alike)."""
        if self.local is None or shape is None:
            return False
        return self.local.carries(self._peer_rank(a), math.prod(shape) * self._wire(a.module).itemsize, sending)

    def _wire(self, module: str, peer: Optional[str] = None) -> torch.dtype:
        """What a message of `module` to its own stages, or across the bridge to `peer`, travels in:
        bf16 when both sides compute in bf16 (train/precision.py), else the compute's dtype."""
        wire = getattr(self.compute, "wire_dtype", None)
        return self.compute.dtype if wire is None else wire(module, peer)

    def _peer_rank(self, a) -> int:
        """The same (tp, cp, dp) coordinates on the neighbouring pipeline stage."""
        m = self.plan.modules[a.module]
        c = m.coords(self.rank)
        return m.rank(tp=c.tp, cp=c.cp, dp=c.dp, pp=a.peer[1])

    def _known_shape(self, a, st: StepState) -> Optional[Tuple[int, ...]]:
        """Stage-to-stage shape both sides know in advance (compute.p2p_shape), or None: send a header."""
        known = getattr(self.compute, "p2p_shape", None)
        return None if known is None else known(a.module, *self._at(a, st))

    def _post_receives_early(self, actions, st: StepState) -> None:
        """Post stage-to-stage receives ahead (comm/inbox.py) when every one of them has a known shape.

        All or nothing: a header-carrying message from the same peer would be taken by an early buffer.
        """
        recvs = [a for a in actions if a.kind in ("RECV_F", "RECV_B") and a.peer[0] == a.module]
        shapes = [self._known_shape(a, st) for a in recvs]
        gloo = [not self._shm(a, s, sending=False) for a, s in zip(recvs, shapes)]
        recvs, shapes = [a for a, g in zip(recvs, gloo) if g], [s for s, g in zip(shapes, gloo) if g]
        wires = {self._wire(a.module) for a in recvs}  # one dtype per inbox
        if recvs and all(s is not None for s in shapes) and len(wires) == 1:
            self.inbox.expect([(self._peer_rank(a), (a.kind, a.chunk, a.mb), self._peer_rank(a), shape)
                               for a, shape in zip(recvs, shapes)], wires.pop(), self.compute.device)

    def _recv(self, a, key: str, st: StepState) -> torch.Tensor:
        if (a.kind, a.chunk, a.mb) in self.inbox:
            return self.inbox.take((a.kind, a.chunk, a.mb))
        shape = self._known_shape(a, st)
        c, wire = self.compute, self._wire(a.module)
        if self._shm(a, shape, sending=False):
            return self.local.recv(self._peer_rank(a), shape, wire, c.device)
        return recv_tensors([key], self._peer_rank(a), wire, c.device, self.stats, self.timeout_s,
                            None if shape is None else {key: shape}, self.progress)[key]

    def _send(self, a, key: str, t: torch.Tensor, st: StepState) -> None:
        shape = self._known_shape(a, st)
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"{a}: sending shape {tuple(t.shape)} but compute.p2p_shape promised {tuple(shape)}")
        t = t.to(self._wire(a.module))  # the sender casts: the receiver allocates the wire dtype
        if self._shm(a, shape, sending=True):
            return self.local.send(t, self._peer_rank(a))
        send_tensors({key: t}, self._peer_rank(a), self.outbox, self.stats, header=shape is None)

    # ---- receives and sends: P2P within a module, the bridge between modules ----
    def _recv_f(self, a, st: StepState) -> None:
        pmod = a.peer[0]
        c = self.compute
        if pmod == a.module:
            got = self._recv(a, a.module, st)
            grad = st.train and self.trainable.get(a.module, True) and \
                (a.module == LANG or not self.plan.modules[a.module].frozen)
        else:
            got = self.bridges[pmod].recv_forward(c.language_rows(pmod, *self._at(a, st)), c.hidden,
                                                  self._wire(a.module, pmod), c.device)
            grad = st.train and self.trainable.get(pmod, True)
        st.inputs.setdefault(_key(a), {})[pmod] = got.requires_grad_(grad)

    def _send_f(self, a, st: StepState) -> None:
        out = st.outputs[_key(a)]
        if not (st.train and out.requires_grad):  # no backward will need it
            del st.outputs[_key(a)]
        if a.peer[0] == a.module:
            self._send(a, a.module, out.detach(), st)  # the transport holds its own reference to the storage
        else:
            self.bridges[a.module].send_forward(out.detach().to(self._wire(a.module, a.peer[0])),
                                                self.compute.encoder_rows(a.module, *self._at(a, st)))
        self._free_output(_key(a), st)

    def _free_output(self, key: Tuple[int, int], st: StepState) -> None:
        """After its send was posted, a kept output's values are needed by no one here (megatron's
        `deallocate_output_tensor`): backward needs only its graph and the gradient the peer sends back.
        Its storage becomes one element; the transport's own reference to the old storage keeps the
        bytes alive until the send completed, so they go exactly then. Not for a view (its base would
        keep the storage) nor for an output that autograd saved for backward itself."""
        out = st.outputs.get(key)
        if out is None or out._base is not None or self.memory.saves(out):
            return
        st.out_shapes[key] = out.shape
        out.data = torch.empty((1,), dtype=out.dtype, device=out.device)
        self.stats.outputs_freed += 1

    def _recv_b(self, a, st: StepState) -> None:
        c = self.compute
        if a.peer[0] == a.module:
            st.out_grads[_key(a)] = self._recv(a, a.module, st)
        else:
            rows = c.encoder_rows(a.module, *self._at(a, st))
            st.out_grads[_key(a)] = self.bridges[a.module].recv_backward(rows, c.hidden, self._wire(a.module, a.peer[0]),
                                                                         c.device)

    def _send_b(self, a, st: StepState) -> None:
        pmod = a.peer[0]
        x = st.inputs[_key(a)].pop(pmod)
        g = x.grad if x.grad is not None else torch.zeros_like(x)
        if pmod == a.module:
            self._send(a, pmod, g, st)
        else:
            self.bridges[pmod].send_backward(g.to(self._wire(a.module, pmod)),
                                             self.compute.language_rows(pmod, *self._at(a, st)))

    # ---- lowered p2p groups: every op of the group posted at once, shapes known on both sides ----
    def _group(self, g, st: StepState) -> None:
        posted, finish = [], []
        for a, ops in g.messages:
            if g.relay:  # what the previous group's receive `a` brought, passed on (comm/routes.py relays)
                mine, done = [("send", r.dst, b) for r, b in self._relaying.pop(a, [])], (lambda: None)
            else:
                mine, done = self._message_ops(a, st)
            if [(o[0], o[1]) for o in mine] != list(ops):
                raise RuntimeError(f"rank {self.rank}: {a} posts {[(o[0], o[1]) for o in mine]}, but the lowering "
                                   f"says {list(ops)}")
            posted += mine
            finish.append(done)
        self.groups.run(posted, str(g), self.outbox.item)
        for done in finish:
            done()

    def _message_ops(self, a, st: StepState):
        """(ops to post, what to do once they completed) of one send or receive action."""
        c, kind = self.compute, a.kind
        bridge = a.peer[0] != a.module
        if kind in ("SEND_F", "SEND_B"):
            sent = _nothing  # what to do once the group completed
            if kind == "SEND_F":
                t = st.outputs[_key(a)]
                if not (st.train and t.requires_grad):  # no backward will need it
                    del st.outputs[_key(a)]
                sent = partial(self._free_output, _key(a), st)
            else:
                x = st.inputs[_key(a)].pop(a.peer[0])
                t = x.grad if x.grad is not None else torch.zeros_like(x)
            t = t.detach().to(self._wire(a.module, a.peer[0]))  # the sender casts to the wire dtype
            if bridge:
                blocks = (self.bridges[a.module].forward_blocks(t, c.encoder_rows(a.module, *self._at(a, st)))
                          if kind == "SEND_F" else
                          self.bridges[a.peer[0]].gradient_blocks(t, c.language_rows(a.peer[0], *self._at(a, st))))
                return [("send", r.dst, b.contiguous()) for r, b in blocks], sent
            if kind == "SEND_F" and tuple(t.shape) != self._stage_shape(a, st):
                raise ValueError(f"{a}: sending shape {tuple(t.shape)} but compute.p2p_shape promised "
                                 f"{self._stage_shape(a, st)}")
            return [("send", self._peer_rank(a), t.contiguous())], sent
        if bridge:
            return self._bridge_receive(a, st)
        shape = self._stage_shape(a, st) if kind == "RECV_F" else \
            tuple(st.out_shapes.get(_key(a), st.outputs[_key(a)].shape))
        buf = torch.empty(shape, dtype=self._wire(a.module), device=c.device)

        def done() -> None:
            if kind == "RECV_B":
                st.out_grads[_key(a)] = buf
            else:
                grad = st.train and self.trainable.get(a.module, True) and \
                    (a.module == LANG or not self.plan.modules[a.module].frozen)
                st.inputs.setdefault(_key(a), {})[a.module] = buf.requires_grad_(grad)

        return [("recv", self._peer_rank(a), buf)], done

    def _stage_shape(self, a, st: StepState) -> Tuple[int, ...]:
        """A forward stage-to-stage message's shape, which a program's receiver must know (no headers)."""
        shape = self._known_shape(a, st)
        if shape is None:
            raise RuntimeError(f"{a}: a lowered program needs every stage-to-stage shape in advance "
                               f"({type(self.compute).__name__}.p2p_shape gave none for {a.module!r})")
        return tuple(shape)

    def _bridge_receive(self, a, st: StepState):
        c, wire = self.compute, self._wire(a.module, a.peer[0])
        if a.kind == "RECV_F":
            pmod = a.peer[0]
            bridge = self.bridges[pmod]
            want = bridge.embedding_rows(c.language_rows(pmod, *self._at(a, st)))
            bufs = [torch.empty((n, c.hidden), dtype=wire, device=c.device) for _, n in want]

            def done() -> None:
                self._keep_relays(a, bridge.fwd, [r for r, _ in want], bufs)
                got = torch.cat(bufs) if bufs else torch.empty((0, c.hidden), dtype=wire, device=c.device)
                st.inputs.setdefault(_key(a), {})[pmod] = got.requires_grad_(st.train and self.trainable.get(pmod, True))

            return [("recv", r.src, b) for (r, _), b in zip(want, bufs)], done
        rows = c.encoder_rows(a.module, *self._at(a, st))
        bridge = self.bridges[a.module]
        where = bridge.gradient_index(rows)
        total = sum(len(x) if not isinstance(x, int) else x for x in rows)
        bufs = [torch.empty((idx.numel(), c.hidden), dtype=wire, device=c.device) for _, idx in where]

        def done() -> None:
            self._keep_relays(a, bridge.bwd, [r for r, _ in where], bufs)
            out = torch.zeros((total, c.hidden), dtype=wire, device=c.device)
            for (_, idx), b in zip(where, bufs):
                out.index_copy_(0, idx.to(c.device), b)
            st.out_grads[_key(a)] = out

        return [("recv", r.src, b) for (r, _), b in zip(where, bufs)], done

    def _keep_relays(self, a, routes, incoming, bufs) -> None:
        """The received blocks this rank relays, for the relay group the lowering puts next."""
        out = [(x, b) for r, b in zip(incoming, bufs) for x in relayed(routes, r)]
        if out:
            self._relaying[a] = out

    # ---- compute ----
    def _f(self, a, st: StepState) -> None:
        with torch.set_grad_enabled(st.train), self.memory.hooks:
            st.outputs[_key(a)] = self.compute.forward(a.module, *self._at(a, st), st.inputs.get(_key(a), {}), st,
                                                       chunk=a.chunk)

    def _b(self, a, st: StepState) -> None:
        out = st.outputs.pop(_key(a))
        grad = st.out_grads.pop(_key(a), None)
        if not out.requires_grad:
            return
        if grad is not None and grad.dtype != out.dtype:  # it came in the wire dtype (bf16)
            grad = grad.to(out.dtype)
        freed = st.out_shapes.pop(_key(a), None) is not None
        deferring = getattr(self.compute, "deferring_weight_grads", None)  # zero-bubble computes only
        with deferring(a.module, a.chunk, *self._at(a, st)) if deferring else contextlib.nullcontext():
            if not freed:
                torch.autograd.backward(out, grad_tensors=grad)
            else:  # freed after its send: the engine checks the gradient against the graph, not the emptied output
                Variable._execution_engine.run_backward(tensors=(out,), grad_tensors=(grad,), keep_graph=False,
                                                        create_graph=False, inputs=(), allow_unreachable=True,
                                                        accumulate_grad=True)

    def _w(self, a, st: StepState) -> None:
        """The weight gradients the B of the same (chunk, microbatch) deferred."""
        self.compute.weight_grads(a.module, a.chunk, *self._at(a, st))

    # ---- end of step ----
    def _reduce_grads(self, a, st: StepState) -> None:
        if self.local is not None:
            self.local.flush()  # every send of this step is posted: nothing a neighbour needs waits behind a collective
        self.compute.reduce_grads(a.module)

    def _opt_step(self, a, st: StepState) -> None:
        self._complete_sends()
        if self.on_opt_step is not None:
            self.on_opt_step(st)


def _key(a) -> Tuple[int, int]:
    """What a step's state is keyed by: the action's (chunk, microbatch)."""
    return a.chunk, a.mb


def _nothing() -> None:
    pass


def _fault_from_env(rank: int) -> Optional[Tuple[int, str]]:
    """`MIMO_INJECT_FAULT=RANK:STEP[:exit|raise|hang]` kills, fails or hangs one rank mid-step (tests)."""
    return injection_from_env("MIMO_INJECT_FAULT", rank, "exit")


def injection_from_env(name: str, rank: int, default: str) -> Optional[Tuple[int, str]]:
    """A test hook `NAME=RANK:STEP[:KIND]`: (0-based step, kind) when it names this rank."""
    spec = os.environ.get(name)
    if not spec:
        return None
    parts = spec.split(":")
    if int(parts[0]) != rank:
        return None
    return int(parts[1]), parts[2] if len(parts) > 2 else default


def _inject(kind: str, rank: int) -> None:
    if kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank}")
    if kind == "hang":
        time.sleep(10_000)
    os._exit(17)
