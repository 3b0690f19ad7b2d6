"""What each of the 2 chain ranks runs: ours and torch's interleaved, tiny tensors, bubble vs m, latency,
and ours vs torch's interleaved 1F1B and interleaved zero bubble at V = 2 (same chain, same work per rank).

One process launch per benchmark session (importing torch costs more than a whole measurement), and
each repetition runs ours and theirs back to back in alternating order, so load that drifts on a
shared machine hits both alike. Every rank returns raw (start, end) pairs on the shared monotonic
clock plus its own per-action durations; `analysis.py` turns them into ratios.
"""

import time
from dataclasses import dataclass, replace
from typing import Dict, List, Tuple

from mimo_runtime.bench.chain import ChainConfig
from mimo_runtime.schedule.actions import COMPUTE_KINDS, OPT_STEP, REDUCE_GRADS

BUSY_KINDS = COMPUTE_KINDS + (REDUCE_GRADS, OPT_STEP)  # F, B, W and the step's end
SCHEDULES = (("interleaved_1f1b", 2), ("zero_bubble", 2))  # (kind, vpp) compared with torch's class of that kind


@dataclass(frozen=True)
class PipelineBench:
    sizes: Tuple[int, ...] = (512, 64)  # hidden sizes compared with torch
    reps: int = 30
    warmup: int = 3
    tiny_hidden: int = 8
    tiny_reps: int = 40
    bubble_microbatches: Tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    bubble_reps: int = 5
    slack: int = 1  # also time ours with this many extra warm-up forwards (0: skip)
    base: ChainConfig = ChainConfig()


def _timed(step, s: int, cpu: List[float] = None) -> Tuple[float, float]:
    """(start, end) of one step on the shared monotonic clock; appends this process's CPU seconds to `cpu`."""
    import torch.distributed as dist

    dist.barrier()
    c0, t0 = time.process_time(), time.perf_counter()
    step(s)
    t1 = time.perf_counter()
    if cpu is not None:
        cpu.append(time.process_time() - c0)  # every thread, gloo's included: the work, whatever the load
    return t0, t1


def _durations(runner) -> Dict[str, List[float]]:
    """Per action kind on this rank (F, B, SEND_F, ...), from the executor's trace of the last step."""
    out: Dict[str, List[float]] = {}
    for action, (_, t0, t1) in zip(runner.actions, runner.trace):
        out.setdefault(action.kind, []).append(t1 - t0)
    return out


def _busy(runner) -> float:
    return sum(t1 - t0 for action, (_, t0, t1) in zip(runner.actions, runner.trace) if action.kind in BUSY_KINDS)


def compare(cfg: ChainConfig, rank: int, reps: int, warmup: int, slack: int = 0) -> dict:
    """Interleaved repetitions of ours and torch's on identical stages (torch's also with gradients
    kept between steps, and ours with `slack`, if > 0).

    The order rotates every repetition so no runtime always runs first (or right after another).
    """
    from mimo_runtime.bench.chain import build_stage
    from mimo_runtime.bench.runners import OursChain, TorchChain, both

    ours, theirs = both(cfg, rank)
    # torch's again, zeroing gradients in place as our trainer does: the difference that is not the pipeline's
    runners = {"ours": ours, "theirs": theirs, "theirs_keep_grads": TorchChain(cfg, rank, build_stage(cfg, rank), True)}
    if slack:
        runners["ours_slack"] = OursChain(cfg, rank, build_stage(cfg, rank), slack=slack)
    for s in range(warmup):
        for runner in runners.values():
            _timed(runner.step, s)
    out = {name: [] for name in runners}
    out.update({f"{name}_cpu": [] for name in runners})
    out.update(actions={}, busy=[], actions_per_step=len(ours.actions))
    names = list(runners)
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(_timed(runners[name].step, warmup + r, out[f"{name}_cpu"]))
            if name == "ours":
                for kind, ds in _durations(ours).items():
                    out["actions"].setdefault(kind, []).extend(ds)
                out["busy"].append(_busy(ours))
    out["ours_loss"], out["theirs_loss"] = ours.loss, theirs.loss
    return out


def ours_only(cfg: ChainConfig, rank: int, reps: int, warmup: int) -> dict:
    from mimo_runtime.bench.chain import build_stage
    from mimo_runtime.bench.runners import OursChain

    ours = OursChain(cfg, rank, build_stage(cfg, rank))
    for s in range(warmup):
        _timed(ours.step, s)
    out = {"ours": [], "actions": {}, "busy": [], "actions_per_step": len(ours.actions)}
    for r in range(reps):
        out["ours"].append(_timed(ours.step, warmup + r))
        for kind, ds in _durations(ours).items():
            out["actions"].setdefault(kind, []).extend(ds)
        out["busy"].append(_busy(ours))
    return out


def one_way_latency(cfg: ChainConfig, rank: int, reps: int = 50) -> float:
    """Seconds for one activation-sized message over the transport our executor uses between the stages.

    Shared memory when the executor would use it (comm/shm.py), else gloo with the receive posted first.
    """
    import torch
    import torch.distributed as dist

    from mimo_runtime.comm import CommStats, shm

    buf = torch.zeros(cfg.micro_batch, cfg.hidden)
    peer = 1 - rank
    nbytes = buf.numel() * buf.element_size()
    local = shm.connect({peer: nbytes}, [peer], CommStats(), 60.0)
    if local is not None and local.carries(peer, nbytes, sending=True):
        send = lambda: local.send(buf, peer)  # noqa: E731
        recv = lambda: local.recv(peer, buf.shape, buf.dtype, buf.device)  # noqa: E731
    else:
        send, recv = lambda: dist.send(buf, peer), lambda: dist.recv(buf, peer)  # noqa: E731
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        if rank == 0:
            send()
            recv()
        else:
            recv()
            send()
    took = (time.perf_counter() - t0) / (2 * reps)
    if local is not None:
        local.close()
    return took


def pipeline_rank(rank: int, world_size: int, bench: PipelineBench) -> dict:
    import torch

    torch.set_num_threads(1)
    result: Dict[str, object] = {"compare": {}, "latency": {}}
    for hidden in bench.sizes:
        cfg = replace(bench.base, hidden=hidden)
        result["compare"][hidden] = compare(cfg, rank, bench.reps, bench.warmup, bench.slack)
        result["latency"][hidden] = one_way_latency(cfg, rank)
    tiny = replace(bench.base, hidden=bench.tiny_hidden, layers=1)
    result["schedules"] = {kind: compare(replace(bench.base, hidden=bench.sizes[0], vpp=vpp, schedule=kind), rank,
                                         bench.reps, bench.warmup) for kind, vpp in SCHEDULES}
    result["tiny"] = compare(tiny, rank, bench.tiny_reps, bench.warmup)
    result["bubble"] = {m: ours_only(replace(bench.base, microbatches=m), rank, bench.bubble_reps, 1)
                        for m in bench.bubble_microbatches}
    return result
