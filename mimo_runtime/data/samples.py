"""A user's dataset of samples, read the way the runtime places data.

A sample is a mapping in `MimoModel.forward`'s format:
    {"input_ids": (S,), "labels": (S,), "loss_mask": (S,), "position_ids": (S,) optional,
     "modality_inputs": {modality: {encoder key: {input name: (items, ...) tensor}}}}
`SampleDataset` gives it the interface the feeder reads (`tokens(i)`, `modality(i, name)`,
`num_items(i, name)`) and touches only the keys asked for: language ranks read the token fields,
an encoder rank only `modality_inputs[its modality]`. A sample whose mapping loads values on
access (a `collections.abc.Mapping` subclass) therefore never loads images on language ranks,
nor token fields on encoder ranks. `workers > 0` loads a batch's samples in that many forked
worker processes.
"""

import collections.abc
import multiprocessing
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from mimo_runtime.errors import TopologyError

TOKEN_FIELDS = ("input_ids", "labels", "loss_mask")
_LIVE: Dict[int, "SampleDataset"] = {}  # worker processes find their dataset here (inherited by fork)


class SampleDataset:
    def __init__(self, data, modalities: Sequence[str], src: str, field: str, factory: str, workers: int = 0,
                 seq_length: Optional[int] = None):
        self.data, self.modalities = data, list(modalities)
        self.src, self.field, self.factory = src, field, factory
        self.workers = workers
        self.seq_length = getattr(data, "seq_length", None) or seq_length or 0
        self._length = 0  # samples are batched: they must share one length
        self._items: Dict[tuple, int] = {}  # (i, name) -> items, learned when the inputs were loaded
        self._pool = None

    def __len__(self) -> int:
        return len(self.data)

    def _error(self, message: str) -> TopologyError:
        return TopologyError(self.src, self.field, f"{self.factory}: {message}")

    def _sample(self, i: int) -> Mapping:
        sample = self.data[i]
        if not isinstance(sample, collections.abc.Mapping):
            raise self._error(f"sample {i} is a {type(sample).__name__}; samples must be mappings with "
                              f"{', '.join(TOKEN_FIELDS)} and modality_inputs")
        return sample

    def tokens(self, i: int) -> Dict[str, torch.Tensor]:
        """input_ids, labels, loss_mask (float) and position_ids of sample i, 1-D of one length."""
        sample = self._sample(i)
        keys = set(sample)  # iterating names loads nothing; `in` on a Mapping subclass may call __getitem__
        missing = [k for k in TOKEN_FIELDS if k not in keys]
        if missing:
            raise self._error(f"sample {i} has no {', '.join(missing)}")
        out = {"input_ids": _tensor(sample["input_ids"], torch.long), "labels": _tensor(sample["labels"], torch.long),
               "loss_mask": _tensor(sample["loss_mask"], torch.float32)}
        length = out["input_ids"].numel()
        out["position_ids"] = (_tensor(sample["position_ids"], torch.long) if "position_ids" in keys
                               else torch.arange(length))
        for key, value in out.items():
            if value.dim() != 1 or value.numel() != length:
                raise self._error(f"sample {i}: {key} has shape {tuple(value.shape)}; every token field must be "
                                  f"1-D of the length of input_ids ({length})")
        self._length = self._length or length
        if length != self._length:
            raise self._error(f"sample {i} has {length} tokens but other samples have {self._length}; pad every "
                              f"sample to one length")
        return out

    def modality(self, i: int, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """{encoder key: {input name: (items, ...) tensor}} of sample i for modality `name`."""
        sample = self._sample(i)
        inputs = sample["modality_inputs"] if "modality_inputs" in set(sample) else None
        if not isinstance(inputs, collections.abc.Mapping) or name not in set(inputs):
            have = ", ".join(str(k) for k in inputs) if isinstance(inputs, collections.abc.Mapping) else ""
            raise self._error(f"sample {i} has no modality_inputs['{name}'] (it has: {have or 'none'}); the "
                              f"topology has an encoder '{name}', so every sample needs its inputs "
                              f"(0 items: tensors with a first dimension of 0)")
        out = _encoder_inputs(inputs[name], lambda m: self._error(f"sample {i}: modality_inputs['{name}']{m}"))
        self._items[(i, name)] = next(iter(next(iter(out.values())).values())).size(0)
        return out

    def num_items(self, i: int, name: str) -> int:
        """Items of `name` in sample i: the dataset's own num_items(i, name) when it has one (then
        a later encoder pipeline stage loads no inputs), else the first dimension of its inputs."""
        if hasattr(self.data, "num_items"):
            return int(self.data.num_items(i, name))
        if (i, name) not in self._items:
            self.modality(i, name)
        return self._items[(i, name)]

    # ---- batches: in worker processes when workers > 0 ----
    def tokens_batch(self, ids: Sequence[int]) -> List[Dict[str, torch.Tensor]]:
        return self._map("tokens", ids, ())

    def modality_batch(self, ids: Sequence[int], name: str) -> List[Dict[str, Dict[str, torch.Tensor]]]:
        out = self._map("modality", ids, (name,))
        for i, inputs in zip(ids, out):  # learned in a worker: keep the counts here too
            self._items[(i, name)] = next(iter(next(iter(inputs.values())).values())).size(0)
        return out

    def _map(self, method: str, ids: Sequence[int], extra: tuple) -> List[Any]:
        if self.workers == 0 or len(ids) <= 1:
            return [getattr(self, method)(i, *extra) for i in ids]
        if self._pool is None:
            _LIVE[id(self)] = self  # before the fork, so the workers inherit it without pickling
            self._pool = multiprocessing.get_context("fork").Pool(self.workers)
        return self._pool.starmap(_in_worker, [(id(self), method, i, extra) for i in ids])


def _in_worker(key: int, method: str, i: int, extra: tuple):
    return getattr(_LIVE[key], method)(i, *extra)


def _tensor(value, dtype: torch.dtype) -> torch.Tensor:
    return value.to(dtype) if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=dtype)


def _encoder_inputs(value, error) -> Dict[str, Dict[str, torch.Tensor]]:
    if not isinstance(value, collections.abc.Mapping) or not value:
        raise error(" must map encoder key -> {input name: tensor}")
    out: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, inputs in value.items():
        if not isinstance(inputs, collections.abc.Mapping) or not inputs:
            raise error(f"['{key}'] must map input name -> tensor")
        out[key] = {}
        for field, tensor in inputs.items():
            if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
                raise error(f"['{key}']['{field}'] must be a tensor with items along dim 0")
            out[key][field] = tensor
    return out

