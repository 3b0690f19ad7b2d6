"""Local launcher: start one process per rank on 127.0.0.1, watch them, never hang.

Any rank that dies is named (rank and module) and the others are stopped at once. A rank that
raises a `UserError` reports its one-line message; the spawner re-raises it so the CLI prints it
with exit code 2. On a timeout every rank dumps its Python stack (faulthandler) before it is killed.

Ranks start from a fork server that imported torch and megatron-core once (`PRELOAD`): a rank then
starts in a fraction of a second instead of re-importing them (several seconds of CPU each, which
dominated short jobs and the test suite). A forked rank would inherit the server's environment and
working directory, not the caller's, so both travel with every start. `MIMO_START_METHOD=spawn`
goes back to fresh interpreters.
"""

import faulthandler
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, List, Optional, Sequence

import torch.multiprocessing as mp

from mimo_runtime.errors import JobFailure, UserError


class RankFailure(JobFailure):
    """A rank died, raised or hung; `rank` and `what` (its modules) name it for the user."""

    def __init__(self, rank: int, what: str, summary: str, detail: str = ""):
        self.rank, self.what = rank, what
        super().__init__(f"rank {rank} ({what}) {summary}", detail)


class RankUserError(UserError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_rank_env(rank: int, world_size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def init_distributed(timeout_s: float, device: str = "cpu", gpu: Optional[int] = None) -> None:
    """Join the process group from RANK/WORLD_SIZE/MASTER_* (set by us, torchrun or the Ray launcher);
    on `device` "cuda" over NCCL on GPU `gpu` (default LOCAL_RANK), train/device.py."""
    import torch
    import torch.distributed as dist

    from mimo_runtime.train.device import init_process_group

    torch.set_num_threads(1)
    from mimo_runtime.launch.cli import quiet_library_warnings

    quiet_library_warnings()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not dist.is_initialized():
        init_process_group(timeout_s, device, gpu)


PRELOAD = ["mimo_runtime.launch.preload"]  # what the fork server imports once (torch, megatron-core, the runtime)


def _context():
    method = os.environ.get("MIMO_START_METHOD", "forkserver")
    if method not in ("forkserver", "spawn"):
        raise UserError(f"MIMO_START_METHOD: expected forkserver or spawn, got {method!r}")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server starts (the first spawn)
    return ctx


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, result_dir: str,
            timeout_s: float, env: Optional[dict] = None, cwd: Optional[str] = None, device: str = "cpu") -> None:
    if env is not None:  # the caller's, not the fork server's
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    init_rank_env(rank, world_size, port)
    out = os.path.join(result_dir, f"rank{rank}.pkl")
    try:
        init_distributed(timeout_s, device)
        result = ("ok", fn(rank, world_size, *args))
        code = 0
    except UserError as e:
        result, code = ("user_error", str(e)), 2
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit non-zero
        result, code = ("error", (f"{type(e).__name__}: {e}", traceback.format_exc())), 1
    with open(out + ".tmp", "wb") as f:
        pickle.dump(result, f)
    os.replace(out + ".tmp", out)
    if code == 0:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def spawn(fn: Callable, world_size: int, args: Sequence[Any] = (), timeout_s: float = 600.0,
          describe: Optional[Callable[[int], str]] = None, collective_timeout_s: float = 60.0,
          device: str = "cpu") -> List[Any]:
    """Run `fn(rank, world_size, *args)` on `world_size` local processes (on `device` "cuda": rank r on
    GPU r, over NCCL); returns each rank's result."""
    describe = describe or (lambda r: "rank")
    port = free_port()
    ctx = _context()
    with tempfile.TemporaryDirectory(prefix="mimo-spawn-") as result_dir:
        procs = []
        for rank in range(world_size):
            p = ctx.Process(target=_worker, args=(rank, world_size, port, fn, tuple(args), result_dir,
                                                  collective_timeout_s, dict(os.environ), os.getcwd(), device),
                            daemon=False)
            p.start()
            procs.append(p)
        try:
            _watch(procs, result_dir, timeout_s, describe)
        finally:
            _stop(procs)
        return [_read(result_dir, r)[1] for r in range(world_size)]


def _read(result_dir: str, rank: int):
    path = os.path.join(result_dir, f"rank{rank}.pkl")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return pickle.load(f)


def _watch(procs, result_dir: str, timeout_s: float, describe: Callable[[int], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if any(p.exitcode not in (None, 0) for p in procs):
            time.sleep(0.5)  # peers of a dead rank fail right after it: collect them, then blame the cause
            _raise_first_cause(procs, result_dir, describe)
        if all(p.exitcode == 0 for p in procs):
            return
        if time.monotonic() > deadline:
            for p in procs:
                if p.exitcode is None:
                    os.kill(p.pid, signal.SIGUSR1)  # faulthandler: every rank prints its stack
            time.sleep(1.0)
            stuck = [r for r, p in enumerate(procs) if p.exitcode is None]
            raise RankFailure(stuck[0], describe(stuck[0]),
                              f"did not finish within {timeout_s:.0f} s (ranks still running: {stuck})")
        time.sleep(0.05)


_PEER_ERRORS = ("Connection closed by peer", "Connection reset", "Timed out", "timed out", "Broken pipe",
                "Socket", "Gloo", "gloo")


def _raise_first_cause(procs, result_dir: str, describe: Callable[[int], str]) -> None:
    """Several ranks may have failed; report the one that caused it, not the peers that noticed."""
    failed = [(r, _read(result_dir, r)) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
    for rank, res in failed:
        if res is not None and res[0] == "user_error":
            raise RankUserError(res[1])
    for rank, res in failed:
        if res is None:
            raise RankFailure(rank, describe(rank), f"died with exit code {procs[rank].exitcode}")
    own = [(r, res) for r, res in failed if not any(k in res[1][0] for k in _PEER_ERRORS)]
    rank, res = (own or failed)[0]
    raise RankFailure(rank, describe(rank), f"failed: {res[1][0]}", res[1][1])


def _stop(procs) -> None:
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.exitcode is None:
            p.kill()
            p.join()
