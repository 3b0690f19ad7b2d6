"""The GPU check: one command, at most ~4 minutes, one JSON object on stdout.

  (a) colocated_vs_cpu: a one-process colocated run on the GPU (transformer-engine layers when TE
      imports; the runtime's reducer, then megatron's DDP + distributed optimizer, then bf16) against
      the CPU fp32 reference, per-step losses within tolerance (fp32 1e-3, bf16 3e-2 relative); and a
      checkpoint written with the runtime's reducer resumed with megatron's, equal to the run without
      the stop.
  (b) throughput_vs_hf: tokens/s and MFU of a ~1B-parameter LLaVA-shaped model (CLIP-B/14 224 +
      a 16-layer Llama, bf16 autocast, AdamW) trained by this runtime on one GPU, and transformers'
      LlavaForConditionalGeneration training step on the same architecture and batch, in the same
      process, one after the other.
  (c) heterogeneous_nccl: with 2+ GPUs, topologies/vlm-2rank.yaml (images on GPU 0, language on
      GPU 1, NCCL) against the colocated one-GPU run; one GPU cannot hold two NCCL ranks, so there
      it is reported as not run.

Each part runs in its own process group (session) under a time cap and writes what it has after
every milestone, so a part that runs out still reports what it measured ("status": "timeout").
`--dry-run` runs every part's code path on CPU at toy size (gloo; megatron's reducer needs CUDA, so
its runs use the runtime's) and prints the same keys. Without CUDA and without --dry-run it prints
one line with `skip` and exits 0. Never part of `make test` (tests/gpu/test_gpu_check.py runs the
dry run).

Needs: Python >= 3.10; torch with CUDA; transformers (part b); this repository (run from a checkout:
the script puts it on sys.path) and what it imports: megatron-core 0.16.1, einops, absl-py, psutil,
numpy, pyyaml, safetensors; transformer-engine is optional. Without a registry, carry those as wheels.

Run: python benchmarks/gpu_check.py [--dry-run] [--budget-s 240] [--only a,b,c]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a source checkout, without installing

PARTS = {"a": "colocated_vs_cpu", "b": "throughput_vs_hf", "c": "heterogeneous_nccl"}
CAPS = {"a": 0.30, "b": 0.45, "c": 0.25}  # share of the budget per part
TOL = {"fp32": 1e-3, "bf16": 3e-2}


# ---- driver ----
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every part's code path on CPU at toy size")
    p.add_argument("--budget-s", type=float, default=240.0, help="wall-clock budget of all parts (default 240)")
    p.add_argument("--only", default="a,b,c", help="parts to run, e.g. a,c")
    p.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # internal: run one part
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        return run_part(args.part, args.result, args.dry_run)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("skip: no CUDA device (torch.cuda.is_available() is False); --dry-run runs the code paths on CPU")
        return 0
    t0 = time.monotonic()
    out = {"dry_run": args.dry_run, "device": _device_name(args.dry_run), "versions": _versions(), "parts": {}}
    for key in [k for k in args.only.split(",") if k]:
        cap = CAPS[key] * args.budget_s
        out["parts"][PARTS[key]] = _run_with_cap(key, args.dry_run, cap)
    out["took_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out, indent=1))
    return 0


def _run_with_cap(key: str, dry_run: bool, cap_s: float) -> dict:
    """Run part `key` in its own session; on timeout kill the whole session (its ranks too)."""
    fd, result = tempfile.mkstemp(prefix=f"gpu-check-{key}-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, __file__, "--part", key, "--result", result] + (["--dry-run"] if dry_run else [])
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=cap_s)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        status = "timeout"
    got = _read(result)
    os.unlink(result)
    got.setdefault("status", status)
    if status != "ok":
        got["status"] = status if got["status"] in ("ok", "running") else got["status"]
        got["log_tail"] = (log or "")[-1500:]
    got["wall_s"] = round(time.monotonic() - t0, 1)
    got["cap_s"] = round(cap_s, 1)
    return got


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Partial:
    """A part's JSON, rewritten after each milestone so the driver has it even after a kill."""

    def __init__(self, path: str):
        self.path, self.data = path, {"status": "running"}

    def __setitem__(self, key, value):
        self.data[key] = value
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def run_part(key: str, result: str, dry_run: bool) -> int:
    out = Partial(result)
    {"a": part_a, "b": part_b, "c": part_c}[key](out, dry_run)
    if out.data["status"] == "running":
        out["status"] = "ok"
    return 0


def _device_name(dry_run: bool) -> str:
    import torch

    if dry_run or not torch.cuda.is_available():
        return "cpu"
    return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "megatron-core", "transformers", "transformer-engine", "transformer_engine"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# ---- (a) colocated on the GPU vs the CPU fp32 reference ----
def part_a(out: Partial, dry_run: bool) -> None:
    from mimo_runtime.topology import load_topology

    steps = 2 if dry_run else 6
    device = "cpu" if dry_run else "cuda"
    megatron = "runtime" if dry_run else "megatron"  # megatron's DDP allocates on CUDA
    path = str(ROOT / "topologies" / "colocated-1rank.yaml")
    topo = load_topology(path, [f"train.steps={steps}"])
    bf16 = load_topology(path, [f"train.steps={steps}", "train.precision=bf16"])
    out["te_layers"] = (not dry_run) and _te_importable()
    ref = _losses(topo, "cpu", "runtime", steps)
    out["cpu_fp32_losses"] = ref
    runs = {"gpu_fp32_runtime": (topo, "runtime", "fp32"), "gpu_fp32_megatron": (topo, megatron, "fp32"),
            "gpu_bf16_megatron": (bf16, megatron, "bf16")}
    passed = True
    for name, (t, reducer, precision) in runs.items():
        losses = _guarded(out, name, lambda: _losses(t, device, reducer, steps))
        if losses is None:
            passed = False
            continue
        err = _max_rel_err(losses, ref)
        ok = err <= TOL[precision]
        passed &= ok
        out[name] = {"grad_reducer": reducer, "losses": losses, "max_rel_err": err, "tol": TOL[precision], "pass": ok}
    half = steps // 2
    with tempfile.TemporaryDirectory() as ck:
        resumed = _guarded(out, "resume_runtime_ckpt_with_megatron", lambda: (
            _losses(topo, device, "runtime", half, checkpoint_dir=ck),
            _losses(topo, device, megatron, steps, checkpoint_dir=ck, resume=True))[1])
    whole = out.data.get("gpu_fp32_runtime", {}).get("losses")
    if resumed is not None and whole is not None:
        err = _max_rel_err(resumed, whole[half:])
        ok = len(resumed) == steps - half and err <= TOL["fp32"]
        out["resume_runtime_ckpt_with_megatron"] = {"from_step": half, "grad_reducer": megatron, "losses": resumed,
                                                    "max_rel_err": err, "pass": ok}
        passed &= ok
    else:
        passed = False
    out["pass"] = passed


def _max_rel_err(losses: list, ref: list) -> float:
    return max(abs(a - b) / abs(b) for a, b in zip(losses, ref)) if len(losses) == len(ref) else float("inf")


def _guarded(out: Partial, name: str, run):
    """run(); on an exception record it under `name` and return None, so the other runs still report."""
    import traceback

    try:
        return run()
    except Exception as e:  # noqa: BLE001 - reported in the JSON, the check goes on
        out[name] = {"error": f"{type(e).__name__}: {e}"[:500], "trace": traceback.format_exc()[-1500:], "pass": False}
        return None


def _te_importable() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not used"
        return False
    return True


def _one_rank(device: str):
    """Join a 1-rank world (gloo, or NCCL on GPU 0) for an in-process run; the caller destroys it."""
    from mimo_runtime.launch.spawn import free_port, init_distributed, init_rank_env

    init_rank_env(0, 1, free_port())
    init_distributed(120.0, device)


def _losses(topology, device: str, reducer: str, steps: int, **run) -> list:
    import torch.distributed as dist

    from mimo_runtime.train.config import RunConfig
    from mimo_runtime.train.loop import train_rank

    _one_rank(device)
    try:
        cfg = RunConfig(steps=steps, seed=topology.train.seed, colocated=True, nproc=1, progress=False,
                        device=device, grad_reducer=reducer, **run)
        return [r["loss"] for r in train_rank(0, 1, topology, cfg).metrics]
    finally:
        dist.destroy_process_group()


# ---- (b) tokens/s and MFU vs transformers ----
def llava_dims(dry_run: bool) -> dict:
    """~1B parameters: CLIP-B/14 at 224 (86M) + projector + a Llama of 16 x 2048 (GQA 16/8, SwiGLU 5632, 32k vocab)."""
    if dry_run:
        return dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=16, patch_size=4),
                    text=dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
                    batch=2, seq=64, steps=1, warmup=1)
    return dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=14),
                text=dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                          num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=1024),
                batch=8, seq=1024, steps=5, warmup=2)


def hf_config_model(args, ctx):
    """Model factory: the architecture of an HF LLaVA config.json, keyed init (no weights to read)."""
    from mimo_runtime.hf.factory import hf_model

    return hf_model(args, ctx)


def part_b(out: Partial, dry_run: bool) -> None:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    d = llava_dims(dry_run)
    image_token = d["text"]["vocab_size"] - 1
    config = LlavaConfig(vision_config=CLIPVisionConfig(**d["vision"]), text_config=LlamaConfig(**d["text"]),
                         image_token_index=image_token, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", architectures=["LlavaForConditionalGeneration"])
    tokens_per_image = (d["vision"]["image_size"] // d["vision"]["patch_size"]) ** 2
    batch = _llava_batch(d, image_token, tokens_per_image)
    flops = _llava_flops(d, tokens_per_image)
    from mimo_runtime.train.metrics import device_peak_tflops

    peak = None if dry_run else device_peak_tflops()
    out["model"] = {"vision": d["vision"], "text": d["text"], "batch": d["batch"], "seq": d["seq"],
                    "step_flops": flops, "peak_tflops": peak}
    with tempfile.TemporaryDirectory() as hf_dir:
        Path(hf_dir, "config.json").write_text(json.dumps(config.to_dict()))
        ours = _guarded(out, "ours", lambda: _time_ours(hf_dir, d, batch, dry_run))
    if ours is not None:
        out["ours"] = _rates(ours, d, flops, peak)
    theirs = _guarded(out, "hf_transformers", lambda: _time_hf(config, d, batch, dry_run))
    if theirs is not None:
        out["hf_transformers"] = _rates(theirs, d, flops, peak)
    if ours is not None and theirs is not None:
        out["ours_over_hf_tokens_per_s"] = out.data["ours"]["tokens_per_s"] / out.data["hf_transformers"]["tokens_per_s"]
    else:
        out["ours_over_hf_tokens_per_s"] = None


def _llava_batch(d: dict, image_token: int, tokens_per_image: int) -> list:
    import torch

    g = torch.Generator().manual_seed(0)
    seq, size = d["seq"], d["vision"]["image_size"]
    samples = []
    for _ in range(d["batch"]):
        text = torch.randint(3, image_token - 1, (seq - 1 - tokens_per_image,), generator=g)
        ids = torch.cat([torch.tensor([1]), torch.full((tokens_per_image,), image_token), text])
        mask = torch.zeros(seq)
        mask[tokens_per_image:seq - 1] = 1.0  # predict the text
        samples.append({"input_ids": ids, "labels": torch.cat([ids[1:], torch.tensor([0])]), "loss_mask": mask,
                        "modality_inputs": {"images": {"vision_tower": {
                            "pixel_values": torch.randn(1, 3, size, size, generator=g)}}}})
    return samples


def _llava_flops(d: dict, tokens_per_image: int) -> int:
    from mimo_runtime.train.flops import LayerDims, encoder_step_flops, language_step_flops

    t, v = d["text"], d["vision"]
    lang = language_step_flops(LayerDims(t["hidden_size"], t["num_attention_heads"], t["intermediate_size"],
                                         t["num_key_value_heads"], gated=True), t["num_hidden_layers"],
                               t["vocab_size"], d["batch"], d["seq"])
    # vision_feature_layer -2: the last layer's output is not used (both sides still compute it)
    enc = encoder_step_flops(LayerDims(v["hidden_size"], v["num_attention_heads"], v["intermediate_size"]),
                             v["num_hidden_layers"], t["hidden_size"], d["batch"], tokens_per_image + 1, False)
    return lang + enc


def _rates(step_s: list, d: dict, flops: int, peak) -> dict:
    best = sorted(step_s)[len(step_s) // 2]
    out = {"step_s": step_s, "median_step_s": best, "tokens_per_s": d["batch"] * d["seq"] / best}
    out["mfu"] = None if peak is None else flops / best / (peak * 1e12)
    return out


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_ours(hf_dir: str, d: dict, batch: list, dry_run: bool) -> list:
    import torch
    import torch.distributed as dist

    import mimo_runtime
    from mimo_runtime.topology import topology_from_dict

    device = "cpu" if dry_run else "cuda"
    topo = topology_from_dict({
        "name": "llava-1b", "placement": "colocated",
        "model": {"factory": "gpu_check:hf_config_model", "args": {"dir": hf_dir}},
        "modules": {"images": {"kind": "encoder", "ranks": 1}, "language": {"kind": "language", "ranks": 1}},
        "train": {"global_batch": d["batch"], "micro_batch": d["batch"], "lr": 1.0e-5, "precision": "bf16",
                  "steps": d["warmup"] + d["steps"]}})
    _one_rank(device)
    try:
        rt = mimo_runtime.Runtime(topo, device=device)
        times = []
        for i in range(d["warmup"] + d["steps"]):
            _sync()
            t0 = time.perf_counter()
            rt.train_step(batch)
            _sync()
            if i >= d["warmup"]:
                times.append(time.perf_counter() - t0)
        del rt
        return times
    finally:
        dist.destroy_process_group()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _time_hf(config, d: dict, batch: list, dry_run: bool) -> list:
    import torch
    from transformers import LlavaForConditionalGeneration

    device = torch.device("cpu" if dry_run else "cuda")
    with device:  # initialized where it trains (fp32 weights, as ours)
        model = LlavaForConditionalGeneration(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0e-5)
    ids = torch.stack([s["input_ids"] for s in batch]).to(device)
    labels = torch.where(torch.stack([s["loss_mask"] for s in batch]).roll(1, 1) > 0, ids, -100).to(device)
    pixels = torch.cat([s["modality_inputs"]["images"]["vision_tower"]["pixel_values"] for s in batch]).to(device)
    times = []
    for i in range(d["warmup"] + d["steps"]):
        _sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        _sync()
        if i >= d["warmup"]:
            times.append(time.perf_counter() - t0)
    return times


# ---- (c) heterogeneous over NCCL vs colocated ----
def part_c(out: Partial, dry_run: bool) -> None:
    import torch

    from mimo_runtime.launch.local import describe_ranks
    from mimo_runtime.launch.spawn import spawn
    from mimo_runtime.topology import load_topology
    from mimo_runtime.train.config import RunConfig
    from mimo_runtime.train.loop import train_rank

    gpus = 0 if dry_run else torch.cuda.device_count()
    if not dry_run and gpus < 2:
        out["status"] = "not run"
        out["reason"] = f"{gpus} GPU: one GPU cannot hold two NCCL ranks (needs 2+)"
        return
    device = "cpu" if dry_run else "cuda"
    steps = 2 if dry_run else 4
    topo = load_topology(str(ROOT / "topologies" / "vlm-2rank.yaml"), [f"train.steps={steps}"])
    reducer = "runtime" if dry_run else "megatron"
    cfg = RunConfig(steps=steps, seed=topo.train.seed, nproc=2, progress=False, device=device, grad_reducer=reducer)
    results = spawn(train_rank, 2, (topo, cfg), timeout_s=600, describe=describe_ranks(topo, cfg),
                    collective_timeout_s=60.0, device=device)
    hetero = [r["loss"] for r in results[0].metrics]
    out["heterogeneous_losses"] = hetero
    colocated = _losses(topo, device, reducer, steps)
    out["colocated_losses"] = colocated
    err = _max_rel_err(hetero, colocated)
    out["max_rel_err"] = err
    out["pass"] = err <= 1e-4


if __name__ == "__main__":
    sys.exit(main())
