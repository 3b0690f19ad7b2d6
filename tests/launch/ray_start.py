"""`ray ...` CLI for a cluster that lives entirely on 127.0.0.1 (tests only).

Ray replaces a loopback address with the machine's routable IP (`resolve_ip_for_localhost`),
so a "127.0.0.1" cluster would still listen on and connect to the external interface. In its
single-machine mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read at import) Ray keeps loopback
addresses: every process this command starts (GCS, raylet, agents, workers, job drivers)
inherits that variable. The CLI itself refuses to add a node in that mode, so here it is
switched back and the substitution is skipped directly.
"""

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray._private.ray_constants as ray_constants  # noqa: E402 - after the variable above
import ray._private.services as services  # noqa: E402

ray_constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host

from ray.scripts.scripts import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "ray"
    sys.exit(main())
