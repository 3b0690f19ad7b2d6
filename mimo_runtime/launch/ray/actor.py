"""The Ray actor that hosts one rank: environment, process group, the rank function, progress.

Imported only after `connect` (it needs `ray` at import time for `@ray.remote`).
"""

import os
import socket
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Sequence

import ray

from mimo_runtime.launch.ray.metrics import PROGRESS_ENV
from mimo_runtime.launch.ray.netaddr import gloo_interface


# Two concurrent calls: `run` occupies one thread for the whole job while the driver polls
# `progress` on the other.
@ray.remote(max_concurrency=2)
class RankActor:
    def __init__(self, rank: int, world_size: int, label: str, env: Mapping[str, str]):
        self.rank, self.world_size, self.label = rank, world_size, label
        os.environ.update(env)
        self.progress_path = os.path.join(tempfile.mkdtemp(prefix=f"mimo-rank{rank}-"), "metrics.jsonl")
        os.environ[PROGRESS_ENV] = self.progress_path

    def __repr__(self) -> str:
        # Ray prefixes every log line this actor prints with its repr: "(rank2 language stage 0 pid=...)".
        return f"rank{self.rank} {self.label}"

    def where(self) -> Dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"rank": self.rank, "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "hostname": socket.gethostname()}

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind((ray.util.get_node_ip_address(), 0))
            return s.getsockname()[1]

    def run(self, master_addr: str, master_port: int, local_rank: int, timeout_s: float, fn: Callable,
            args: Sequence[Any], device: str = "cpu") -> Any:
        from mimo_runtime.launch.spawn import init_distributed

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(local_rank))
        own_ip = ray.util.get_node_ip_address()
        # gloo must use the interface peers can reach: loopback only when the whole cluster is local.
        ifname = gloo_interface(own_ip) or os.environ.get("GLOO_SOCKET_IFNAME")
        if not ifname:
            raise RuntimeError(f"no network interface owns this node's Ray address {own_ip}; "
                               f"set GLOO_SOCKET_IFNAME in the Ray workers' environment")
        os.environ["GLOO_SOCKET_IFNAME"] = ifname
        print(f"joining the process group at {master_addr}:{master_port} as rank {self.rank}/{self.world_size} "
              f"(local rank {local_rank}, gloo on {ifname})", flush=True)
        # Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigned this actor: it is always cuda:0 here
        init_distributed(timeout_s, device, gpu=0)
        result = fn(self.rank, self.world_size, *args)
        import torch.distributed as dist

        dist.destroy_process_group()  # on failure the driver kills the actor instead: peers may be gone
        return result

    def progress(self, since: int) -> List[str]:
        """Lines `since` onward of this rank's progress file (rank 0 writes one JSON record per step)."""
        if not os.path.exists(self.progress_path):
            return []
        with open(self.progress_path) as f:
            lines = f.read().split("\n")
        return lines[since:-1]  # the last piece is "" or a record still being written
