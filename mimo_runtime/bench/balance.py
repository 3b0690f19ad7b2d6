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
