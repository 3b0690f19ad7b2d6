"""`mimo-run train TOPOLOGY ...`: spawn the ranks here, or be one rank under torchrun."""

import os

from mimo_runtime.errors import ArgumentError
from mimo_runtime.factories import preflight
from mimo_runtime.launch.cli import add_overrides, positive_int
from mimo_runtime.topology.schema import SCHEDULES
from mimo_runtime.train.device import resolve_grad_reducer


def add_arguments(p) -> None:
    p.add_argument("topology", help="topology YAML file")
    p.add_argument("--steps", type=positive_int("--steps"),
                   help="optimizer steps (default: train.steps); the lr schedule's decay_steps follows it unless set")
    p.add_argument("--seed", type=int, help="seed for init and data (default: train.seed)")
    p.add_argument("--colocated", action="store_true",
                   help="same model, data and batch with every module on all --nproc ranks (1 = reference)")
    p.add_argument("--nproc", type=positive_int("--nproc"), help="ranks to spawn (default: the topology's)")
    p.add_argument("--metrics", metavar="FILE.jsonl", help="append one JSON object per step")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="pipeline schedule, checked against the topology as train.schedule is (default: train.schedule)")
    p.add_argument("--frozen-lead", type=int, default=1, metavar="K",
                   help="encoders that train nothing compute the next step's first K forwards before the "
                        "optimizer barrier (0: off; default 1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where every rank computes (default: train.device, auto = CUDA when available; "
                        "one GPU per rank, NCCL)")
    p.add_argument("--timeout", type=float, metavar="S", help="collective/peer timeout in seconds (default: train.timeout_s)")
    add_overrides(p)
    ck = p.add_argument_group("checkpoints, evaluation, metrics, trace (docs/quickstart.md)")
    ck.add_argument("--checkpoint-dir", metavar="DIR", help="save checkpoints here (shared storage on several nodes)")
    ck.add_argument("--save-every", type=positive_int("--save-every"), metavar="K",
                    help="save every K steps (default: only after the last step)")
    ck.add_argument("--keep-last", type=int, default=3, metavar="K", help="keep the newest K checkpoints (0: all; default 3)")
    ck.add_argument("--resume", action="store_true", help="start from the latest checkpoint in --checkpoint-dir, if any")
    ck.add_argument("--eval-every", type=positive_int("--eval-every"), metavar="K",
                    help="held-out loss and caption accuracy every K steps and after the last")
    ck.add_argument("--eval-batches", type=positive_int("--eval-batches"), metavar="N",
                    help="held-out global batches per evaluation (default: the whole held-out split)")
    ck.add_argument("--trace", metavar="FILE.json", help="write every rank's actions as one Chrome trace (Perfetto)")
    ck.add_argument("--tensorboard", metavar="DIR", help="also log metrics to TensorBoard (needs `tensorboard`)")
    ck.add_argument("--wandb", metavar="PROJECT",
                    help="also log metrics to Weights & Biases (needs `wandb`; WANDB_MODE=offline writes to disk only)")
    ck.add_argument("--peak-tflops", type=float, metavar="T",
                    help="peak TFLOPs/s of one device, for MFU in the metrics (default: known GPUs' bf16 peak)")
    ray = p.add_argument_group("Ray (docs/launching.md)")
    ray.add_argument("--ray", action="store_true", help="run each rank as a Ray actor, one placement group per module")
    ray.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    ray.add_argument("--max-restarts", type=int, default=0, metavar="K",
                     help="restart every rank up to K times after a failure (from the latest checkpoint)")
    ray.add_argument("--placement-timeout", type=float, default=60.0, metavar="S",
                     help="seconds to wait for the cluster to place every module's ranks (default: 60)")


def run_config(args, topology, options=None):
    """The RunConfig of the flags; `options`: `_product_options(args)` when the caller checked them already."""
    t = topology.train
    nproc = args.nproc or (1 if args.colocated else topology.world_size)
    if not args.colocated and nproc != topology.world_size:
        raise ArgumentError("--nproc", f"{nproc} != {topology.world_size}, the world size of {topology.source} "
                                       f"(use --colocated to run the same model on another rank count)")
    if args.frozen_lead < 0:
        raise ArgumentError("--frozen-lead", f"must be >= 0, got {args.frozen_lead}")
    device = _device(args, topology)
    grad_reducer = resolve_grad_reducer(t.grad_reducer, device, topology.source)
    options = _product_options(args) if options is None else options
    if args.metrics and not args.resume:
        open(args.metrics, "w").close()  # a resumed run appends its steps
    from mimo_runtime.train.loop import RunConfig  # torch and megatron: after the flags are checked

    return RunConfig(steps=args.steps or t.steps, seed=t.seed if args.seed is None else args.seed,
                     colocated=args.colocated, nproc=nproc, schedule=t.schedule,
                     metrics_path=args.metrics, timeout_s=args.timeout or t.timeout_s, frozen_lead=args.frozen_lead,
                     device=device, grad_reducer=grad_reducer, **options)


def _device(args, topology) -> str:
    from mimo_runtime.train.device import modules_without_gpus, resolve_device, topology_wants_gpus

    requested = args.device or topology.train.device
    flag = "--device" if args.device else None
    device = resolve_device(requested, flag, topology.source, topology_wants_gpus(topology) if args.ray else None)
    lacking = modules_without_gpus(topology)
    if args.ray and device == "cuda" and lacking:
        # Ray hides the GPUs an actor did not reserve; one without a GPU bundle would see none (or all)
        raise ArgumentError(flag or "--device", f"cuda under Ray needs a GPU per rank: give modules {lacking} "
                                                f"resources: {{GPU: 1}} (docs/launching.md#gpu-runs)")
    return device


def _product_options(args) -> dict:
    """RunConfig fields of the checkpoint / evaluation / trace flags, checked."""
    if args.resume and not args.checkpoint_dir:
        raise ArgumentError("--resume", "needs --checkpoint-dir DIR")
    if args.save_every and not args.checkpoint_dir:
        raise ArgumentError("--save-every", "needs --checkpoint-dir DIR")
    if args.keep_last < 0:
        raise ArgumentError("--keep-last", f"must be >= 0, got {args.keep_last}")
    if args.eval_batches and not args.eval_every:
        raise ArgumentError("--eval-batches", "needs --eval-every K")
    if args.tensorboard:
        from mimo_runtime.train.metrics import tensorboard_available

        if not tensorboard_available():
            raise ArgumentError("--tensorboard", "the tensorboard package is not installed (pip install tensorboard)")
    if args.wandb:
        from mimo_runtime.train.metrics import wandb_available

        if not wandb_available():
            raise ArgumentError("--wandb", "the wandb package is not installed (pip install 'mimo-runtime[wandb]')")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise ArgumentError("--peak-tflops", f"must be > 0, got {args.peak_tflops}")
    return dict(checkpoint_dir=args.checkpoint_dir, save_every=args.save_every or 0, keep_last=args.keep_last,
                resume=args.resume, eval_every=args.eval_every or 0, eval_batches=args.eval_batches or 0,
                trace_path=args.trace, tensorboard_dir=args.tensorboard, wandb_project=args.wandb,
                peak_tflops=args.peak_tflops)


def run_overrides(args) -> list:
    """`--steps N` is `train.steps` for the whole run: the lr schedule's lengths default to it. `--schedule K`
    is `train.schedule`, so the topology's checks (vpp needs an interleaving schedule, interleaved_1f1b needs
    a chunked module) hold for the flag too."""
    return (list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps else [])
            + ([f"train.schedule={args.schedule}"] if args.schedule else []))


def run(args) -> int:
    topology = _load(args)
    options = _product_options(args)  # bad flags fail before the factories' imports
    preflight(topology)  # model/data factories import here once, before any rank starts
    cfg = run_config(args, topology, options)
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


def _load(args):
    """The topology with the flags applied; a problem with `--schedule` names the flag, not `--set`."""
    from mimo_runtime.topology import load_topology

    try:
        return load_topology(args.topology, run_overrides(args))
    except ArgumentError as e:
        if args.schedule and e.flag == "--set train.schedule":
            raise ArgumentError("--schedule", e.message) from None
        raise


def _run_under_torchrun(topology, cfg) -> int:
    from mimo_runtime.launch.torchrun import run_torchrun_rank

    return run_torchrun_rank(topology, cfg)


def _run_on_ray(args, topology, cfg) -> int:
    from mimo_runtime.launch.ray import launch_ray

    if args.max_restarts < 0:
        raise ArgumentError("--max-restarts", f"must be >= 0, got {args.max_restarts}")
    launch_ray(topology, cfg, args.address, args.max_restarts, args.placement_timeout)
    return 0
