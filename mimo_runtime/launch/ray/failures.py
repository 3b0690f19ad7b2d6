"""Turn what Ray reports about failed ranks into one error naming the rank that caused it."""

from typing import Callable, Dict, List, Tuple

from mimo_runtime.launch.spawn import RankFailure, RankUserError

# Messages of ranks that only noticed a peer going away (gloo), not the cause of the failure.
PEER_ERRORS = ("Connection closed by peer", "Connection reset", "Timed out", "timed out", "Broken pipe",
               "Socket", "Gloo", "gloo")


def is_death(error: BaseException) -> bool:
    import ray

    return isinstance(error, ray.exceptions.RayActorError)


def cause_of(error: BaseException) -> BaseException:
    """The exception the rank function raised, unwrapped from Ray's task error."""
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        return error.cause if error.cause is not None else error
    return error


def is_peer_error(error: BaseException) -> bool:
    return not is_death(error) and any(k in str(cause_of(error)) for k in PEER_ERRORS)


def blame(failures: List[Tuple[int, BaseException]], describe: Callable[[int], str],
          where: Dict[int, dict]) -> Exception:
    """The error to raise for an attempt: a user error first, then a dead actor, then a rank's own error."""
    from mimo_runtime.errors import UserError

    for _, error in failures:
        if isinstance(cause_of(error), UserError):
            return RankUserError(str(cause_of(error)))
    for rank, error in failures:
        if is_death(error):
            at = where.get(rank, {})
            place = f" (pid {at['pid']} on node {at['node_id'][:8]} {at['node_ip']})" if at else ""
            return RankFailure(rank, describe(rank), f"died: its Ray actor process exited{place}", str(error))
    own = [(r, e) for r, e in failures if not is_peer_error(e)]
    rank, error = (own or failures)[0]
    cause = cause_of(error)
    return RankFailure(rank, describe(rank), f"failed: {type(cause).__name__}: {cause}".split("\n")[0], str(error))
