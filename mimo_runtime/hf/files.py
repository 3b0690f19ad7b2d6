"""An HF directory's safetensors: one file or a sharded index, read tensor slice by tensor slice.

Only the header of each file is read to list keys and shapes; `read` returns one slice through
safetensors' `safe_open(...).get_slice`, so a rank never holds more than the shards it loads.
"""

import json
import os
from typing import Dict, List, Sequence

import torch

from mimo_runtime.errors import TopologyError

INDEX = "model.safetensors.index.json"
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class SafetensorsDir:
    def __init__(self, directory: str):
        from safetensors import safe_open

        self.directory = directory
        self._files: Dict[str, str] = {}  # key -> file
        for path in _weight_files(directory):
            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    self._files.setdefault(key, path)
        self._open: Dict[str, object] = {}
        self._safe_open = safe_open

    def keys(self) -> List[str]:
        return list(self._files)

    def file_of(self, key: str) -> str:
        return self._files[key]

    def _handle(self, key: str):
        path = self._files[key]
        if path not in self._open:
            self._open[path] = self._safe_open(path, framework="pt")
        return self._open[path]

    def shape(self, key: str) -> List[int]:
        return list(self._handle(key).get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        return DTYPES.get(self._handle(key).get_slice(key).get_dtype(), torch.float32)

    def read(self, key: str, dim: int = 0, start: int = 0, stop: int = -1) -> torch.Tensor:
        """The tensor `key`, rows (dim 0) or columns (dim 1) [start, stop) only; stop -1: all."""
        sl = self._handle(key).get_slice(key)
        shape = sl.get_shape()
        if not shape:
            return sl[:]
        stop = shape[dim] if stop < 0 else stop
        index = tuple([slice(None)] * dim + [slice(start, stop)])
        return sl[index].contiguous()

    def read_full(self, key: str) -> torch.Tensor:
        return self._handle(key).get_tensor(key)


def _weight_files(directory: str) -> Sequence[str]:
    index = os.path.join(directory, INDEX)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise TopologyError(index, "weight_map", f"cannot read the shard index: {e}") from None
        missing = [p for p in files if not os.path.isfile(os.path.join(directory, p))]
        if missing:
            raise TopologyError(index, "weight_map", f"shard {missing[0]} is missing from {directory}")
        return [os.path.join(directory, p) for p in files]
    files = sorted(p for p in os.listdir(directory) if p.endswith(".safetensors"))
    if not files:
        raise TopologyError(directory, "", "no *.safetensors weights in this directory")
    return [os.path.join(directory, p) for p in files]
