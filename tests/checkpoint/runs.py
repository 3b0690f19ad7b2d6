"""The training runs the checkpoint tests share, each launched once per session (real processes).

    S = images -> language (2 ranks);  A = images dp2 -> language tp2 (4 ranks);
    P = images -> language pp2 (3 ranks);  C = colocated on 1 rank

    uninterrupted  S, 6 steps, saving every 2 and keeping 2                    -> dir `full`
    first_half     S, 3 steps, saving at the end                               -> dir `half`
    resumed        S, --resume from `half` to step 6
    from_a         A, 3 steps (metrics with MFU at a 1 TFLOPs/s peak, held-out eval, trace) -> dir `a`
    crashed        P, 4 steps saving every 3; rank 2 killed while saving step 4 -> dir `crash`
    gated          G = tiny-llama (SwiGLU, RMSNorm, GQA) language tp2 (2 ranks) from a pretrained torch
                   file of full tensors, 4 steps saving every 2                 -> dir `gated`
    gated_resumed  G resumed at step 2 from a copy of `gated` to step 4
    on_one_rank    one process: the load-error cases, then C resumed from `a` (tp2 -> tp1, encoder
                   dp2 -> colocated), C resumed from `crash` (pp2 -> pp1), each to step 6, and
                   tiny-llama on one rank resumed at step 2 of `gated` (SwiGLU tp2 -> tp1) to step 4
"""

import functools
import json
import os
import shutil
import tempfile

from mimo_runtime.errors import JobFailure
from mimo_runtime.launch.local import launch_local
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.train.checkpoint import CRASH_ENV
from mimo_runtime.train.loop import RunConfig
from tests.train.equivalence import topology

SEED = 7
ENC, LANG = {"kind": "encoder"}, {"kind": "language"}
S = topology("tiny-vlm", {"images": {**ENC, "ranks": 1}, "language": {**LANG, "ranks": 1}})
A = topology("tiny-vlm", {"images": {**ENC, "ranks": 2, "parallel": {"dp": 2}},
                          "language": {**LANG, "ranks": 2, "parallel": {"tp": 2}}})
P = topology("tiny-vlm", {"images": {**ENC, "ranks": 1}, "language": {**LANG, "ranks": 2, "parallel": {"pp": 2}}})
AVLM = topology("tiny-avlm", {"images": {**ENC, "ranks": 1}, "audio": {**ENC, "ranks": 1},
                              "language": {**LANG, "ranks": 1}})


@functools.lru_cache(maxsize=None)
def workdir() -> str:
    return tempfile.mkdtemp(prefix="mimo-ckpt-test-")


def path(*parts: str) -> str:
    return os.path.join(workdir(), *parts)


PRETRAINED = path("tiny-llama-language.pt")
G = topology("tiny-llama", {"language": {**LANG, "ranks": 2, "parallel": {"tp": 2},
                                         "pretrained": {"path": PRETRAINED, "format": "torch"}}})


def config(topo, steps: int, colocated: bool = False, **kw) -> RunConfig:
    return RunConfig(steps=steps, seed=SEED, colocated=colocated, nproc=1 if colocated else topo.world_size,
                     timeout_s=30, progress=False, **kw)


def launch(topo, cfg):
    return launch_local(topo, cfg, timeout_s=240)


@functools.lru_cache(maxsize=None)
def uninterrupted():
    return launch(S, config(S, 6, checkpoint_dir=path("full"), save_every=2, keep_last=2))


@functools.lru_cache(maxsize=None)
def first_half():
    return launch(S, config(S, 3, checkpoint_dir=path("half")))


@functools.lru_cache(maxsize=None)
def resumed():
    first_half()
    return launch(S, config(S, 6, checkpoint_dir=path("half"), resume=True))


@functools.lru_cache(maxsize=None)
def from_a():
    return launch(A, config(A, 3, checkpoint_dir=path("a"), eval_every=2, eval_batches=2,
                            metrics_path=path("a.jsonl"), trace_path=path("trace.json"), peak_tflops=1.0))


@functools.lru_cache(maxsize=None)
def crashed():
    """(the launcher's failure message, `latest` and the directory listing right after the crash)."""
    os.environ[CRASH_ENV] = "2:4"
    try:
        launch(P, config(P, 4, checkpoint_dir=path("crash"), save_every=3))
    except JobFailure as e:
        with open(path("crash", "latest")) as f:
            return str(e), f.read().strip(), sorted(os.listdir(path("crash")))
    finally:
        del os.environ[CRASH_ENV]
    raise AssertionError("the run with a crash injected while saving finished")


@functools.lru_cache(maxsize=None)
def pretrained_file() -> str:
    """tiny-llama's full language tensors, unlike its keyed init (another seed), via torch.save."""
    import torch

    from mimo_runtime.model import global_parameters
    from mimo_runtime.model.init import initial_value
    from tests.model.fakes import build

    params = global_parameters(build("tiny-llama"))
    torch.save({n: initial_value(SEED + 92, n, p.shape, 4) for n, (p, *_) in params.items()}, PRETRAINED)
    return PRETRAINED


@functools.lru_cache(maxsize=None)
def gated():
    pretrained_file()
    return launch(G, config(G, 4, checkpoint_dir=path("gated"), save_every=2, keep_last=0))


def at_step_2(name: str) -> str:
    """A copy of checkpoint dir `gated` whose latest checkpoint is step 2."""
    gated()
    dst = path(name)
    shutil.copytree(path("gated"), dst, ignore=shutil.ignore_patterns("step_00000004"))
    with open(os.path.join(dst, "latest"), "w") as f:
        f.write("step_00000002\n")
    return dst


@functools.lru_cache(maxsize=None)
def gated_resumed():
    return launch(G, config(G, 4, checkpoint_dir=at_step_2("gated-tp2"), resume=True))


def broken_copy(name: str, edit) -> str:
    """A copy of checkpoint dir `a` with its step-3 checkpoint edited by `edit(path)`."""
    dst = path(name)
    shutil.copytree(path("a"), dst)
    edit(os.path.join(dst, "step_00000003"))
    return dst


def _truncate(file: str) -> None:
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) // 2)


def _relabel(ckpt: str) -> None:
    """Claim the checkpoint is of tiny-avlm: the tensor check must still catch it."""
    file = os.path.join(ckpt, "mimo.json")
    with open(file) as f:
        meta = json.load(f)
    meta["model"] = "tiny-avlm"
    with open(file, "w") as f:
        json.dump(meta, f)


def _load_cases():
    return {
        "wrong_model": (AVLM, SEED, path("a")),
        "wrong_seed": (S, SEED + 1, path("a")),
        "missing_shard": (S, SEED, broken_copy("missing", lambda d: os.remove(os.path.join(d, "__2_0.distcp")))),
        "truncated_shard": (S, SEED, broken_copy("truncated", lambda d: _truncate(os.path.join(d, "__3_0.distcp")))),
        "relabelled": (AVLM, SEED, broken_copy("relabelled", _relabel)),
        "dangling_latest": (S, SEED, broken_copy("dangling", shutil.rmtree)),
        "good": (S, SEED, path("a")),
    }


@functools.lru_cache(maxsize=None)
def on_one_rank():
    """({case: (checkpoint dir, error line or None)},
    [C resumed from `a`, C resumed from `crash`, tiny-llama on one rank resumed from `gated`])."""
    from tests.checkpoint.rank_fns import load_then_resume

    from_a()
    crashed()
    cases = _load_cases()
    resumes = [(S, config(S, 6, colocated=True, checkpoint_dir=path(d), resume=True)) for d in ("a", "crash")]
    resumes.append((G, config(G, 4, colocated=True, checkpoint_dir=at_step_2("gated-tp1"), resume=True)))
    errors, results = spawn(load_then_resume, 1, args=(list(cases.values()), resumes), timeout_s=240,
                            collective_timeout_s=30)[0]
    return {name: (case[2], err) for (name, case), err in zip(cases.items(), errors)}, results


def losses(results, start: int = 0):
    return [m["loss"] for m in results[0].metrics][start:]
