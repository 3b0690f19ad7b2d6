"""`mimo-run train TOPOLOGY ...`: spawn the ranks here, or be one rank under torchrun."""

import os

from mimo_runtime.errors import ArgumentError
from mimo_runtime.launch.cli import positive_int


def add_arguments(p) -> None:
    p.add_argument("topology", help="topology YAML file")
    p.add_argument("--steps", type=positive_int("--steps"), help="optimizer steps (default: train.steps)")
    p.add_argument("--seed", type=int, help="seed for init and data (default: train.seed)")
    p.add_argument("--colocated", action="store_true",
                   help="same model, data and batch with every module on all --nproc ranks (1 = reference)")
    p.add_argument("--nproc", type=positive_int("--nproc"), help="ranks to spawn (default: the topology's)")
    p.add_argument("--metrics", metavar="FILE.jsonl", help="append one JSON object per step")
    p.add_argument("--schedule", choices=("1f1b", "gpipe"), help="pipeline schedule (default: train.schedule)")
    p.add_argument("--timeout", type=float, metavar="S", help="collective/peer timeout in seconds (default: train.timeout_s)")
    ray = p.add_argument_group("Ray (docs/launching.md)")
    ray.add_argument("--ray", action="store_true", help="run each rank as a Ray actor, one placement group per module")
    ray.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    ray.add_argument("--max-restarts", type=int, default=0, metavar="K",
                     help="restart every rank up to K times after a failure (from the latest checkpoint)")
    ray.add_argument("--placement-timeout", type=float, default=60.0, metavar="S",
                     help="seconds to wait for the cluster to place every module's ranks (default: 60)")


def run_config(args, topology):
    from mimo_runtime.train.loop import RunConfig

    t = topology.train
    nproc = args.nproc or (1 if args.colocated else topology.world_size)
    if not args.colocated and nproc != topology.world_size:
        raise ArgumentError("--nproc", f"{nproc} != {topology.world_size}, the world size of {topology.source} "
                                       f"(use --colocated to run the same model on another rank count)")
    if args.metrics:
        open(args.metrics, "w").close()
    return RunConfig(steps=args.steps or t.steps, seed=t.seed if args.seed is None else args.seed,
                     colocated=args.colocated, nproc=nproc, schedule=args.schedule or t.schedule,
                     metrics_path=args.metrics, timeout_s=args.timeout or t.timeout_s)


def run(args) -> int:
    from mimo_runtime.topology import load_topology

    topology = load_topology(args.topology)
    cfg = run_config(args, topology)
    if args.ray:
        return _run_on_ray(args, topology, cfg)
    for flag, value in (("--address", args.address), ("--max-restarts", args.max_restarts)):
        if value:
            raise ArgumentError(flag, "only applies with --ray")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _run_under_torchrun(topology, cfg)
    from mimo_runtime.launch.local import launch_local

    launch_local(topology, cfg)
    return 0


def _run_under_torchrun(topology, cfg) -> int:
    from mimo_runtime.launch.torchrun import run_torchrun_rank

    return run_torchrun_rank(topology, cfg)


def _run_on_ray(args, topology, cfg) -> int:
    from mimo_runtime.launch.ray import launch_ray

    if args.max_restarts < 0:
        raise ArgumentError("--max-restarts", f"must be >= 0, got {args.max_restarts}")
    launch_ray(topology, cfg, args.address, args.max_restarts, args.placement_timeout)
    return 0
