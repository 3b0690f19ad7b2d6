"""Be one rank of a job torchrun started: `torchrun --nproc-per-node N -m mimo_runtime.launch train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (rendezvous on
127.0.0.1 unless told otherwise) and stops every rank when one fails; this side checks the
world size against the topology and names the failing rank and its module.
"""

import os
import sys
import time
import traceback

from mimo_runtime.errors import ArgumentError, UserError
from mimo_runtime.launch.ray.netaddr import gloo_interface, local_ip_towards
from mimo_runtime.launch.spawn import RankFailure, init_distributed


def run_torchrun_rank(topology, cfg) -> int:
    from mimo_runtime.launch.local import describe_ranks
    from mimo_runtime.train.loop import train_rank

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != cfg.nproc:
        if rank != 0:
            time.sleep(5.0)  # rank 0 says it once; torchrun stops this rank when rank 0 exits
            sys.exit(2)
        what = "--colocated --nproc" if cfg.colocated else f"the world size of {topology.source}"
        raise ArgumentError("--nproc-per-node", f"torchrun started {world} ranks but {what} is {cfg.nproc}")
    # gloo must use an interface the peers can reach: loopback only when the rendezvous is local.
    ifname = gloo_interface(local_ip_towards(os.environ.get("MASTER_ADDR", "127.0.0.1")))
    if ifname:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", ifname)
    init_distributed(cfg.timeout_s, cfg.device)  # on CUDA: GPU LOCAL_RANK, NCCL
    try:
        train_rank(rank, world, topology, cfg)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - named for the user; torchrun stops the other ranks
        raise RankFailure(rank, describe_ranks(topology, cfg)(rank), f"failed: {type(e).__name__}: {e}",
                          traceback.format_exc()) from None
    return 0
