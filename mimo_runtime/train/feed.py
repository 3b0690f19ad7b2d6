"""Data placement: each rank loads only what its stage uses (DESIGN "Data placement").

Encoder first stages load their modality's items for their samples; encoder last stages only the
per-sample item counts (to split rows for the bridge; their token ids too when the language
model cuts sequences over context/sequence-parallel slots); language stages only token tensors.
"""

import time
from collections import defaultdict
from typing import Dict, List, Mapping

import torch

from mimo_runtime.plan import ModulePlan, Plan
from mimo_runtime.plan.sequence import pad_multiple
from mimo_runtime.train.metrics import content_tokens
from mimo_runtime.train.sampler import Sampler
from mimo_runtime.train.sequence_cut import cut_tokens, replica_layout


class Feeder:
    def __init__(self, plan: Plan, dataset, sampler: Sampler, collate_tokens, collate_modality,
                 tokens_per_item: Mapping[str, int]):
        self.plan, self.dataset, self.sampler = plan, dataset, sampler
        self.collate_tokens, self.collate_modality = collate_tokens, collate_modality
        self.tokens_per_item = dict(tokens_per_item)  # MimoModelConfig.tokens_per_item
        self.packed = plan.topology.train.packing
        self._token_batches: Dict[tuple, Dict[str, torch.Tensor]] = {}  # this step's batches, by replica
        self._wait: Dict[int, float] = defaultdict(float)  # seconds spent waiting for data, by step
        self._content: Dict[tuple, int] = {}  # non-padding tokens of the replica batches loaded, by (step, mb, dp)

    def samples(self, step: int, mb: int, module: ModulePlan, rank: int) -> List[int]:
        return self.sampler.replica(step, mb, module, module.coords(rank).dp)

    def modality_inputs(self, step: int, mb: int, name: str, rank: int) -> Dict:
        module = self.plan.modules[name]
        ids = self.samples(step, mb, module, rank)
        inputs = self.collate_modality(self._load(step, "modality", ids, name))
        self._prefetch(step, mb, module, module.coords(rank).dp, "modality", name)
        return inputs

    def rows_per_sample(self, step: int, mb: int, name: str, rank: int) -> List[int]:
        """Rows each of this encoder replica's samples contributes (items x tokens per item)."""
        ids = self.samples(step, mb, self.plan.modules[name], rank)
        return [self.dataset.num_items(i, name) * self.tokens_per_item[name] for i in ids]

    def tokens(self, step: int, mb: int, module: ModulePlan, rank: int) -> Dict[str, torch.Tensor]:
        """The token batch this language rank reads: its replica's, cut to its context-parallel part
        (and packed with train.packing; train/sequence_cut.py). The bridge, forward and backward of
        one microbatch share it."""
        c = module.coords(rank)
        key = (step, mb, module.name, c.dp, c.cp)
        if key not in self._token_batches:
            if any(k[0] != step for k in self._token_batches):
                self._token_batches.clear()
            batch = self._replica_batch(step, mb, module, c.dp)
            self._token_batches[key] = cut_tokens(batch, replica_layout(batch, module, self.packed), c.cp)
        return self._token_batches[key]

    def content_tokens(self, step: int, mb: int, module: ModulePlan, rank: int) -> int:
        """Non-padding tokens of this rank's replica batch (train/metrics.content_tokens): counted when
        the batch was loaded, so nothing is read twice."""
        self.tokens(step, mb, module, rank)
        return self._content[(step, mb, module.coords(rank).dp)]

    def _replica_batch(self, step: int, mb: int, module: ModulePlan, dp: int) -> Dict[str, torch.Tensor]:
        ids = self.sampler.replica(step, mb, module, dp)
        samples = self._load(step, "tokens", ids)
        self._content = {k: v for k, v in self._content.items() if k[0] >= step - 1}
        self._content[(step, mb, dp)] = content_tokens(samples)
        self._prefetch(step, mb, module, dp, "tokens")
        return self.collate_tokens(pad_to_longest(samples, pad_multiple(module.cp) * module.sequence_shards))

    def row_slots(self, step: int, mb: int, name: str, rank: int, special_id: int) -> List[List[int]]:
        """Encoder side of a bridge into a language model cut over several slots (context or sequence
        parallelism): for each of this replica's samples, the slot of each of its rows (its special
        tokens, in order), from the layout of the language replica the sample goes to."""
        enc, lang = self.plan.modules[name], self.plan.language
        per_enc = self.sampler.global_mb // enc.dp
        per_lang = self.sampler.global_mb // lang.dp
        first = enc.coords(rank).dp * per_enc
        out, replicas = [], {}
        for g in range(first, first + per_enc):
            d, i = divmod(g, per_lang)
            if d not in replicas:
                batch = self._replica_batch(step, mb, lang, d)
                replicas[d] = batch, replica_layout(batch, lang, self.packed)
            batch, layout = replicas[d]
            positions = (batch["input_ids"][i] == special_id).nonzero().flatten().tolist()
            out.append([layout.slot(i, p) for p in positions])
        return out

    def all_modality_inputs(self, step: int, mb: int, rank: int) -> Dict:
        """Colocated: every module on this rank, so every modality of this replica's samples."""
        return {n: self.modality_inputs(step, mb, n, rank) for n in self.plan.encoders}

    def data_position(self, step: int) -> Dict[str, int]:
        """Where the data stands before global batch `step`: saved in every checkpoint. The sampler is a
        pure function of (seed, dataset size, position), so this resumes exactly."""
        order = getattr(self.dataset, "order_key", None)  # a blend's parts and weights (data/blend.py)
        return {"samples_seen": step * self.sampler.global_batch, "dataset_len": self.sampler.dataset_len,
                **({"order": order} if order else {})}

    def position_mismatch(self, saved: Dict[str, int]) -> str:
        """Why a checkpoint's data position cannot continue on this feeder's data ('' when it can)."""
        if saved.get("dataset_len") != self.sampler.dataset_len:
            return (f"checkpoint was trained on a dataset of {saved.get('dataset_len')} samples but this run's has "
                    f"{self.sampler.dataset_len} (the sample order would differ)")
        if saved.get("order") != getattr(self.dataset, "order_key", None):
            return ("checkpoint was trained on another data blend (its parts or weights differ: the sample order "
                    "would differ)")
        return ""

    def step_metrics(self, step: int) -> Dict[str, float]:
        """`data_wait_s`: seconds this rank waited for step `step`'s data; the dataset's own counts
        (truncated samples, skipped records) when it keeps any."""
        metrics = getattr(self.dataset, "step_metrics", None)
        out = metrics(self.sampler.step_samples(step)) if metrics is not None else {}
        return {"data_wait_s": self._wait.pop(step, 0.0), **out}

    def _load(self, step: int, what: str, ids: List[int], *extra) -> List:
        """One batch's samples; datasets with worker processes load them in parallel (data/samples.py,
        data/llava.py), or have them already, prefetched."""
        t0 = time.perf_counter()
        batch = getattr(self.dataset, f"{what}_batch", None)
        out = batch(ids, *extra) if batch is not None else [getattr(self.dataset, what)(i, *extra) for i in ids]
        self._wait[step] += time.perf_counter() - t0
        return out

    def _prefetch(self, step: int, mb: int, module: ModulePlan, dp: int, what: str, *extra) -> None:
        """Ask a dataset with workers to start loading this replica's next microbatch now."""
        prefetch = getattr(self.dataset, "prefetch", None)
        if prefetch is None:
            return
        step, mb = (step, mb + 1) if mb + 1 < self.sampler.num_microbatches else (step + 1, 0)
        prefetch(what, self.sampler.replica(step, mb, module, dp), *extra)


def pad_to_longest(samples: List[Dict[str, torch.Tensor]], multiple: int) -> List[Dict[str, torch.Tensor]]:
    """Samples of different lengths padded to the longest, rounded up to `multiple` (what the
    context/sequence-parallel cut needs); the padding carries no loss and, after every real token
    under the causal mask, changes nothing the real tokens compute."""
    lengths = [s["input_ids"].numel() for s in samples]
    if len(set(lengths)) == 1 and lengths[0] % multiple == 0:
        return samples
    target = -(-max(lengths) // multiple) * multiple
    out = []
    for s, n in zip(samples, lengths):
        extra = target - n
        padded = {k: torch.cat([v, v.new_zeros(extra)]) for k, v in s.items() if k != "position_ids"}
        padded["position_ids"] = torch.cat([s["position_ids"], torch.arange(n, target)])
        out.append(padded)
    return out
