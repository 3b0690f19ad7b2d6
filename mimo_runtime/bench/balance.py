"""data.balance on a skewed image-count distribution: max/mean load per replica and microbatch,
before (the sampler's order) and after (data/balance.py). Pure: the cost model, no processes."""

import random
from typing import Dict, List, Tuple

from mimo_runtime.data.balance import balanced, load_report

ROWS_PER_IMAGE = 576  # a CLIP ViT-L/14 at 336 px
IMAGE_COUNTS = [0] * 6 + [1] * 2 + [2, 8]  # most samples text-only or one image, a few many (multi-image)


def skewed_costs(n: int, seed: int) -> List[Tuple[float, float]]:
    """(encoder rows, language tokens) of n samples drawn from IMAGE_COUNTS, 50-400 text tokens each."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        images = rng.choice(IMAGE_COUNTS)
        out.append((float(images * ROWS_PER_IMAGE), float(rng.randint(50, 400) + images * ROWS_PER_IMAGE)))
    return out


def balance_load(global_batch: int = 256, microbatches: int = 8, encoder_dp: int = 4, language_dp: int = 2,
                 seed: int = 0) -> Dict:
    samples = list(range(global_batch))
    costs = skewed_costs(global_batch, seed)
    order = balanced(samples, costs, microbatches, max(encoder_dp, language_dp))
    per_mb = global_batch // microbatches
    report = load_report(samples, order, costs.__getitem__,
                         {"images": (per_mb // encoder_dp, 0), "language": (per_mb // language_dp, 1)})
    return {"balance_images_max_over_mean": report["images"], "balance_language_max_over_mean": report["language"],
            "setup": {"global_batch": global_batch, "microbatches": microbatches, "encoder_dp": encoder_dp,
                      "language_dp": language_dp, "image_counts": IMAGE_COUNTS, "rows_per_image": ROWS_PER_IMAGE}}


# ---- the measured step time: balanced vs unbalanced, real multi-rank steps ----
# A tiny LLaVA (CLIP 32 px / patch 4: 64 rows per image, Llama) built from configs, so that an image
# costs the encoder and the language model real work; images dp2 -> language dp2 on 4 processes.
STEP_ROWS = 64
STEP_IMAGE_COUNTS = [0] * 6 + [1] * 2 + [4, 8]  # mostly text-only, a few multi-image samples
STEP_TOPOLOGY = {"images": {"kind": "encoder", "ranks": 2, "parallel": {"dp": 2}},
                 "language": {"kind": "language", "ranks": 2, "parallel": {"dp": 2}}}
STEP_TRAIN = {"global_batch": 32, "micro_batch": 4, "lr": 1.0e-4}
_SPECIAL = ["<pad>", "<s>", "</s>", "<image>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]
_WORDS = [str(d) for d in range(10)] + ["digits", "?"]
_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
             "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def write_step_bench(root: str, samples: int = 256, seed: int = 0) -> Dict[str, str]:
    """The HF model directory (with its tokenizer) and a skewed LLaVA dataset under `root`."""
    import json
    import os

    import numpy as np
    from PIL import Image
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mimo_runtime.data.demo_data import save_word_tokenizer

    hf, images = os.path.join(root, "hf"), os.path.join(root, "images")
    os.makedirs(images, exist_ok=True)
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                              image_size=32, patch_size=4, projection_dim=16)
    text = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=640,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=_SPECIAL.index("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    LlavaForConditionalGeneration(config).save_pretrained(hf)
    save_word_tokenizer(hf, _SPECIAL + _WORDS, _SPECIAL, _TEMPLATE)
    rng = random.Random(seed)
    pool = [f"img{k}.png" for k in range(16)]
    for k, name in enumerate(pool):
        pixels = np.random.default_rng(k).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels, mode="RGB").save(os.path.join(images, name))
    path = os.path.join(root, "train.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(samples):
            n = rng.choice(STEP_IMAGE_COUNTS)
            answer = " ".join(rng.choice(_WORDS[:10]) for _ in range(rng.randint(5, 60)))
            rec = {"id": str(i), "conversations": [{"from": "human", "value": "<image> " * n + "digits ?"},
                                                   {"from": "gpt", "value": answer}]}
            if n:
                rec["image"] = [rng.choice(pool) for _ in range(n)]
            f.write(json.dumps(rec) + "\n")
    return {"hf": hf, "path": path, "image_root": images}


SIDES = [(packing, balance) for packing in (False, True) for balance in (False, True)]


def step_topologies(files: Dict[str, str]):
    """One topology per side (packing, balance): the same model, data and global batches."""
    from mimo_runtime.topology import topology_from_dict

    def topo(packing: bool, balance: bool):
        return topology_from_dict({"name": f"balance-bench-{packing}-{balance}", "model": {"hf": files["hf"]},
                                   "modules": STEP_TOPOLOGY, "train": STEP_TRAIN,
                                   "data": {"format": "llava", "path": files["path"], "image_root": files["image_root"],
                                            "packing": packing, "balance": balance}},
                                  source="<bench balance>")

    return [topo(*side) for side in SIDES]


def step_time_rank(rank: int, world_size: int, topologies, reps: int) -> List[Tuple[int, float]]:
    """The runs side by side in one launch: each repetition takes one step of each, in an order that
    reverses every repetition, so machine load drifts over all alike. Returns (side, seconds)."""
    import time

    import torch
    import torch.distributed as dist

    from mimo_runtime.api import Runtime

    torch.set_num_threads(1)
    runtimes = [Runtime(t, seed=0) for t in topologies]
    out = []
    for rep in range(reps + 1):  # repetition 0 warms both up
        for side in (range(len(runtimes)) if rep % 2 == 0 else reversed(range(len(runtimes)))):
            dist.barrier()
            t0 = time.perf_counter()
            runtimes[side].train_step()
            dist.barrier()
            if rep:
                out.append((side, time.perf_counter() - t0))
    return out


def balance_step_time(reps: int = 8) -> Dict:
    """Median step time of the balanced and the unbalanced run on 4 processes, and their ratio, with
    each microbatch padded to its longest sample and packed."""
    import statistics
    import tempfile

    from mimo_runtime.data.llava import index_topology
    from mimo_runtime.launch.spawn import spawn

    with tempfile.TemporaryDirectory(prefix="mimo-balance-bench-") as root:
        files = write_step_bench(root)
        topologies = step_topologies(files)
        index = index_topology(topologies[0])["train"]  # the launcher's pass, once, before the ranks start
        times = spawn(step_time_rank, 4, (topologies, reps), timeout_s=900, collective_timeout_s=120)[0]
        loads = step_loads(index, topologies[0], reps + 1)
    median = {SIDES[k]: statistics.median(t for s, t in times if s == k) for k in range(len(SIDES))}
    out = {}
    for packing, name in ((False, "padded"), (True, "packed")):
        plain, even = median[(packing, False)], median[(packing, True)]
        out[name] = {"balance_step_time_ratio": round(even / plain, 3), "unbalanced_step_median_s": round(plain, 4),
                     "balanced_step_median_s": round(even, 4)}
    return {**out, "reps": reps, "loads": loads,
            "setup": {"image_counts": STEP_IMAGE_COUNTS, "rows_per_image": STEP_ROWS, "modules": STEP_TOPOLOGY,
                      "train": STEP_TRAIN}}


def step_loads(index, topo, steps: int) -> Dict[str, Dict[str, float]]:
    """max/mean load per replica and microbatch over the bench's steps (their mean), before and after."""
    import statistics

    from mimo_runtime.plan import make_plan
    from mimo_runtime.train.sampler import Sampler

    sampler = Sampler.for_plan(make_plan(topo), len(index.entries), 0)  # the runtimes' seed
    cost = lambda i: (len(index.entries[i].images) * STEP_ROWS, index.entries[i].length)  # noqa: E731
    per = topo.train.micro_batch  # samples per replica and microbatch: both modules have dp 2
    reports = []
    for step in range(steps):
        samples = sampler.step_samples(step)
        order = balanced(samples, [cost(i) for i in samples], sampler.num_microbatches, 2)
        reports.append(load_report(samples, order, cost, {"images": (per, 0), "language": (per, 1)}))
    return {m: {w: round(statistics.mean(r[m][w] for r in reports), 3) for w in ("before", "after")}
            for m in reports[0]}
