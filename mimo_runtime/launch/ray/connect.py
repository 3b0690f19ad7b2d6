"""Connect the driver to a Ray cluster (or start a local one on 127.0.0.1).

Ray replaces a loopback address with the machine's routable IP before it connects
(`resolve_ip_for_localhost`). Its CLI does the same to `ray start --node-ip-address=127.0.0.1`,
so such a cluster really runs on the external address and is reachable either way; but a cluster
that listens only on 127.0.0.1 (the tests start one: tests/launch/ray_start.py) is unreachable
through the substituted address. Ray keeps loopback addresses in its single-machine mode
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), read when `ray` is imported: this module sets it before
the first import whenever the driver targets a loopback address, and nothing else in this package
imports `ray` at module level.
"""

import os
import socket
import sys
from typing import Mapping, Optional

from mimo_runtime.errors import ArgumentError
from mimo_runtime.launch.ray.netaddr import is_loopback

_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_driver_env(address: Optional[str]) -> None:
    """Call before the first `import ray`: keep a loopback target (or a local Ray) on 127.0.0.1, show
    every rank's log lines (Ray folds lines that differ only in numbers, such as rank ids), and leave
    failures to the driver's one error line (Ray would print the result of every killed rank as an
    "unhandled error" at exit, after it)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    target = address or os.environ.get("RAY_ADDRESS")
    if (target is None or is_loopback(target)) and "ray" not in sys.modules:
        os.environ.setdefault(_SINGLE_MACHINE, "0")


def connect(address: Optional[str], local_resources: Mapping[str, float], num_cpus: int) -> str:
    """`ray.init` against `address` (or $RAY_ADDRESS); without either, start a local Ray on 127.0.0.1.

    `local_resources`/`num_cpus` only shape a local instance (so a topology's custom resources exist).
    Returns a one-line description of the cluster for the progress output.
    """
    prepare_driver_env(address)
    import ray

    target = address or os.environ.get("RAY_ADDRESS")

    if ray.is_initialized():
        return "the Ray cluster this process is already connected to"
    if target is None:
        ray.init(num_cpus=num_cpus, resources=dict(local_resources) or None, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)
        return f"a local Ray instance on 127.0.0.1 ({num_cpus} CPUs, resources {dict(local_resources)})"
    check_reachable(target)
    try:
        ray.init(address=target, log_to_driver=True, configure_logging=False)
    except ConnectionError as e:
        raise ArgumentError("--address", f"cannot connect to the Ray cluster at {target}: {e}") from None
    return f"the Ray cluster at {target}"


def check_reachable(target: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: `ray.init` would retry it forever."""
    host, _, port = target.rpartition(":")
    if "://" in target or not port.isdigit():
        return  # "auto", ray:// client addresses: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ArgumentError("--address", f"no Ray cluster answers at {target}: {e.strerror or e}") from None
