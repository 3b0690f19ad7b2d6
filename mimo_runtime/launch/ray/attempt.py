"""One attempt at a job: one actor per rank in its placement bundle, run, watch, clean up.

The driver never blocks on a single rank: it waits on all of them with a short timeout, so an
actor that dies is seen within about a second, and the rest are killed right after.
"""

import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, TextIO, Tuple

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from mimo_runtime.launch.ray.actor import RankActor
from mimo_runtime.launch.ray.failures import blame, is_peer_error
from mimo_runtime.launch.ray.placement import RankSlot, actor_options
from mimo_runtime.launch.spawn import RankFailure

POLL_S = 0.5
START_TIMEOUT_S = 300.0  # placed actors only need a worker process and their imports to start
CAUSE_GRACE_S = 15.0  # after a peer error, how long to wait for the rank that caused it (Ray reports a
# dead actor through the GCS, which takes seconds on a loaded machine)


def run_attempt(fn: Callable, args: Sequence[Any], slots: List[RankSlot], bundles: List[Mapping[str, float]],
                pgs: list, describe: Callable[[int], str], env: Mapping[str, str], collective_timeout_s: float,
                job_timeout_s: float, on_progress: Callable[[List[str]], None], out: TextIO = sys.stderr,
                device: str = "cpu") -> Tuple[List[Any], Dict[int, dict]]:
    """Run `fn(rank, world_size, *args)` on one actor per slot; returns (results, placement by rank)."""
    world = len(slots)
    actors = [RankActor.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(pgs[s.group], placement_group_bundle_index=s.bundle),
        **actor_options(bundles[s.group])).remote(s.rank, world, describe(s.rank), env) for s in slots]
    where: Dict[int, dict] = {}
    try:
        started = _gather([a.where.remote() for a in actors], describe, where, START_TIMEOUT_S)
        where.update({w["rank"]: w for w in started})
        for w in started:
            out.write(f"rank {w['rank']} ({describe(w['rank'])}) on node {w['node_id'][:8]} "
                      f"{w['node_ip']} pid {w['pid']}\n")
        port = _gather([actors[0].free_port.remote()], describe, where, START_TIMEOUT_S)[0]
        local = _local_ranks(started)
        refs = [a.run.remote(where[0]["node_ip"], port, local[r], collective_timeout_s, fn, args, device)
                for r, a in enumerate(actors)]
        results = _watch(refs, actors[0], describe, where, job_timeout_s, on_progress)
        return results, where
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)


def _local_ranks(started: List[dict]) -> Dict[int, int]:
    by_node: Dict[str, List[int]] = {}
    for w in sorted(started, key=lambda w: w["rank"]):
        by_node.setdefault(w["node_id"], []).append(w["rank"])
    return {r: ranks.index(r) for ranks in by_node.values() for r in ranks}


def _gather(refs: list, describe, where, timeout_s: float) -> List[Any]:
    """`ray.get` with a deadline, turning the first failure into a named one."""
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    failures = []
    for i, ref in enumerate(refs):
        if ref in ready:
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001 - named below
                failures.append((i, e))
    if failures:
        raise blame(failures, describe, where)
    if pending:
        rank = refs.index(pending[0])
        raise RankFailure(rank, describe(rank), f"did not start within {timeout_s:.0f} s")
    return ray.get(refs)


def _watch(refs: list, rank0, describe, where, job_timeout_s: float,
           on_progress: Callable[[List[str]], None]) -> List[Any]:
    pending = {ref: rank for rank, ref in enumerate(refs)}
    results: List[Any] = [None] * len(refs)
    failures: List[Tuple[int, BaseException]] = []
    progress, seen = None, 0
    deadline = time.monotonic() + job_timeout_s
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        for ref in ready:
            rank = pending.pop(ref)
            try:
                results[rank] = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - collected and blamed below
                failures.append((rank, e))
        if failures:
            if all(is_peer_error(e) for _, e in failures):
                failures += _more_failures(pending)
            _last_poll(seen, rank0, on_progress)  # steps finished before the failure still count
            raise blame(failures, describe, where)
        progress, seen = _poll(progress, seen, rank0, on_progress)
        if time.monotonic() > deadline:
            stuck = sorted(pending.values())
            raise RankFailure(stuck[0], describe(stuck[0]),
                              f"did not finish within {job_timeout_s:.0f} s (ranks still running: {stuck})")
    return results


def _more_failures(pending: Dict[Any, int]) -> List[Tuple[int, BaseException]]:
    """Peers of a failed rank fail right after it: collect them so the cause, not a witness, is blamed."""
    found: List[Tuple[int, BaseException]] = []
    end = time.monotonic() + CAUSE_GRACE_S
    while pending and time.monotonic() < end:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
        for ref in ready:
            rank = pending.pop(ref)
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001
                found.append((rank, e))
                if not is_peer_error(e):
                    return found
    return found


def _last_poll(seen: int, rank0, on_progress) -> None:
    try:
        on_progress(ray.get(rank0.progress.remote(seen), timeout=5.0))
    except Exception:  # noqa: BLE001 - rank 0 is gone with its records: nothing more to show
        pass


def _poll(progress, seen: int, rank0, on_progress):
    """Non-blocking poll of rank 0's progress file; a dead rank 0 just stops reporting."""
    if progress is None:
        return rank0.progress.remote(seen), seen
    if ray.wait([progress], timeout=0)[0]:
        try:
            lines = ray.get(progress)
        except Exception:  # noqa: BLE001 - rank 0 died: the watch loop names it
            return None, seen
        on_progress(lines)
        return None, seen + len(lines)
    return progress, seen
