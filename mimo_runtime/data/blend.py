"""`data: {blend: [{weight, format, path, ...}]}`: a weighted mixture of datasets as one dataset.

The blend is a fixed, seeded interleave of its parts: N = the parts' total size positions, part c
owning round(N x w_c / sum w) of them (largest remainders), spread over the N positions by a seeded
shuffle; part c's k-th position reads its sample perm_c,p[k mod len_c] for pass p = k // len_c, a
fresh seeded permutation per pass (so a part given more positions than samples repeats them evenly,
one given fewer takes a seeded subset). The runtime's sampler then draws from the N positions as
from any dataset. Everything is a pure function of (seed, part sizes, weights): every rank and
topology derives the same blend, and the sampler's position (`samples_seen`) resumes it exactly.
An energon metadataset (its YAML `blend:` of weighted datasets) becomes the same blend (energon.py).
"""

import hashlib
import json
from typing import Dict, List, Sequence, Tuple

import numpy as np

SALT = 0xB1E4D  # keeps the blend's draws apart from the sampler's, which share the run's seed


def quotas(total: int, weights: Sequence[float]) -> List[int]:
    """Positions per part: `total` split in proportion to `weights` (largest remainders, ties to the first)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    order = sorted(range(len(w)), key=lambda c: (-(exact[c] - out[c]), c))
    for c in order[:rest]:
        out[c] += 1
    return [int(x) for x in out]


def blend_order(sizes: Sequence[int], weights: Sequence[float], seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(part, index within the part) of each of the blend's sum(sizes) positions."""
    if not sizes or any(n <= 0 for n in sizes) or any(not w > 0 for w in weights) or len(sizes) != len(weights):
        raise ValueError(f"a blend needs parts with samples and weights > 0, got sizes {list(sizes)}, weights "
                         f"{list(weights)}")
    total = int(sum(sizes))
    counts = quotas(total, weights)
    parts = np.repeat(np.arange(len(sizes)), counts)
    np.random.default_rng([seed, SALT]).shuffle(parts)
    local = np.empty(total, dtype=np.int64)
    for c, (n, k) in enumerate(zip(sizes, counts)):
        passes = -(-k // n)
        perms = [np.random.default_rng([seed, SALT, c, p]).permutation(n) for p in range(passes)]
        local[parts == c] = np.concatenate(perms)[:k] if perms else np.empty(0, dtype=np.int64)
    return parts, local


class BlendDataset:
    """The feeder's dataset interface (data/factory.py) over the blend of `parts` (each one itself)."""

    def __init__(self, parts: Sequence, weights: Sequence[float], seed: int):
        self.parts, self.weights = list(parts), [float(w) for w in weights]
        sizes = [len(p) for p in self.parts]
        self.part, self.local = blend_order(sizes, self.weights, seed)
        # in the checkpoint's data position: resuming on a blend of other parts or weights is refused
        self.order_key = hashlib.sha256(json.dumps([sizes, self.weights, seed]).encode()).hexdigest()[:16]
        lengths = {getattr(p, "seq_length", 0) for p in self.parts}
        self.seq_length = max(lengths)
        self.modalities = sorted({m for p in self.parts for m in getattr(p, "modalities", [])})
        self.workers = max(getattr(p, "workers", 0) for p in self.parts)

    def __len__(self) -> int:
        return len(self.part)

    def where(self, i: int) -> Tuple[object, int]:
        """(part dataset, index in it) of blend position i."""
        return self.parts[self.part[i]], int(self.local[i])

    def tokens(self, i: int):
        part, j = self.where(i)
        return part.tokens(j)

    def modality(self, i: int, name: str):
        part, j = self.where(i)
        return part.modality(j, name)

    def num_items(self, i: int, name: str) -> int:
        part, j = self.where(i)
        return part.num_items(j, name)

    def cost(self, i: int) -> tuple:
        part, j = self.where(i)
        return part.cost(j)

    def loss_tokens(self, ids: Sequence[int]) -> int:
        return sum(part.loss_tokens(js) for part, js in self._by_part(ids).values())

    def step_metrics(self, ids: Sequence[int]) -> Dict[str, int]:
        """The parts' counts summed: truncated samples of this step, bad records left out of every part."""
        out = {"data_truncated": 0, "data_skipped": 0}
        for c, p in enumerate(self.parts):
            js = [int(self.local[i]) for i in ids if self.part[i] == c]
            got = p.step_metrics(js) if hasattr(p, "step_metrics") else {}
            out["data_truncated"] += got.get("data_truncated", 0)
            out["data_skipped"] += got.get("data_skipped", 0)
        return out

    # ---- batches: each part loads its own samples (in its workers), put back in the blend's order ----
    def tokens_batch(self, ids: Sequence[int]) -> List:
        return self._batch("tokens", ids, ())

    def modality_batch(self, ids: Sequence[int], name: str) -> List:
        return self._batch("modality", ids, (name,))

    def prefetch(self, what: str, ids: Sequence[int], *extra) -> None:
        for part, js in self._by_part(ids).values():
            if hasattr(part, "prefetch"):
                part.prefetch(what, js, *extra)

    def _batch(self, what: str, ids: Sequence[int], extra: tuple) -> List:
        out: List = [None] * len(ids)
        for positions, (part, js) in zip(self._positions(ids).values(), self._by_part(ids).values()):
            batch = getattr(part, f"{what}_batch", None)
            got = batch(js, *extra) if batch is not None else [getattr(part, what)(j, *extra) for j in js]
            for k, value in zip(positions, got):
                out[k] = value
        return out

    def _by_part(self, ids: Sequence[int]) -> Dict[int, Tuple[object, List[int]]]:
        out: Dict[int, Tuple[object, List[int]]] = {}
        for i in ids:
            c = int(self.part[i])
            out.setdefault(c, (self.parts[c], []))[1].append(int(self.local[i]))
        return out

    def _positions(self, ids: Sequence[int]) -> Dict[int, List[int]]:
        out: Dict[int, List[int]] = {}
        for k, i in enumerate(ids):
            out.setdefault(int(self.part[i]), []).append(k)
        return out
