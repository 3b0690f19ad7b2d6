"""GPU path: ours vs torch.distributed.pipelining Schedule1F1B on 2 GPUs with NCCL (and transformer-engine).

The same chain as `mimo-run bench` (mimo_runtime/bench/chain.py), one rank per GPU, NCCL for the
stage-to-stage transfers, stages built from transformer-engine Linear layers when it is installed
(`--linear torch` forces torch.nn.Linear). Repetitions interleave ours and theirs; each step ends
with torch.cuda.synchronize(). Prints one JSON object.

On a machine without CUDA (or with fewer than 2 GPUs) it prints {"skipped": "..."} and exits 0, so
it is safe to call anywhere; `make test` never runs it.

Run: .venv/bin/python benchmarks/gpu_pipeline.py [--hidden 4096] [--reps 30] [--linear te|torch]
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing


def _gpu_rank(rank: int, world_size: int, cfg, reps: int, warmup: int) -> dict:
    import time

    import torch
    import torch.distributed as dist

    from mimo_runtime.bench.runners import both

    torch.cuda.set_device(rank)
    cfg = replace(cfg, device=f"cuda:{rank}")
    ours, theirs = both(cfg, rank)

    def timed(runner, s: int):
        dist.barrier()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        runner.step(s)
        torch.cuda.synchronize()
        return t0, time.perf_counter()

    for s in range(warmup):
        timed(ours, s)
        timed(theirs, s)
    out = {"ours": [], "theirs": []}
    for r in range(reps):
        order = (("ours", ours), ("theirs", theirs)) if r % 2 == 0 else (("theirs", theirs), ("ours", ours))
        for name, runner in order:
            out[name].append(timed(runner, warmup + r))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--linear", choices=("te", "torch"), default=None,
                        help="layer implementation (default: te when transformer-engine imports)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print(json.dumps({"skipped": f"needs 2 CUDA devices for a 2-stage NCCL pipeline, found {have}"}))
        return 0
    linear = args.linear or ("te" if _has_te() else "torch")
    if linear == "te" and not _has_te():
        print(json.dumps({"skipped": "--linear te: transformer-engine is not installed"}))
        return 0

    from mimo_runtime.bench.chain import ChainConfig
    from mimo_runtime.bench.stats import spread, step_spans

    cfg = ChainConfig(hidden=args.hidden, layers=args.layers, microbatches=args.microbatches,
                      micro_batch=args.micro_batch, linear=linear)
    results = _launch(cfg, args.reps, warmup=3)
    ours = step_spans([r["ours"] for r in results])
    theirs = step_spans([r["theirs"] for r in results])
    print(json.dumps({"device": torch.cuda.get_device_name(0), "backend": "nccl", "linear": linear,
                      "hidden": cfg.hidden, "microbatches": cfg.microbatches, "micro_batch": cfg.micro_batch,
                      "vs_torch_pipelining": round(sorted(theirs)[len(theirs) // 2] / sorted(ours)[len(ours) // 2], 4),
                      "ours_step_s": spread(ours), "torch_step_s": spread(theirs)}))
    return 0


def _launch(cfg, reps: int, warmup: int) -> list:
    """Two NCCL ranks on 127.0.0.1 (torch.multiprocessing); each returns its (start, end) pairs."""
    import torch.multiprocessing as mp

    from mimo_runtime.launch.spawn import free_port

    port = free_port()
    with mp.get_context("spawn").Manager() as manager:
        results = manager.dict()
        mp.spawn(_nccl_rank, args=(port, cfg, reps, warmup, results), nprocs=2, join=True)
        return [results[r] for r in range(2)]


def _nccl_rank(rank: int, port: int, cfg, reps: int, warmup: int, results) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=300))
    try:
        results[rank] = _gpu_rank(rank, 2, cfg, reps, warmup)
    finally:
        dist.destroy_process_group()


def _has_te() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
