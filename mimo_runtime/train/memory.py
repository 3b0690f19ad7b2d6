"""Activation memory of one rank: bytes saved for backward that are alive at once, plus send buffers.

Why a meter of our own: on CPU there is no allocator statistic to read, and on GPU the allocator's
peak mixes parameters, optimizer state and workspace with activations. What grows with the number
of microbatches is what autograd keeps for backward and what the transport still holds, so the
meter counts exactly those. `torch.autograd.graph.saved_tensors_hooks` sees every tensor a forward
saves: a storage is counted once however many views of it are saved, from the first save until
the last of them is released (after its backward, or when an output without backward is dropped).
A region is keyed by (storage, offset, size), so a microbatch's slice of a step's input batch counts
its own bytes, not the whole batch's. Parameters (and views of them) are saved too but are not
activations: they are skipped.
"""

from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.distributed as dist

MB = 1 << 20


class _Saved:
    """What the pack hook hands autograd: the tensor, and a release when autograd drops it."""

    __slots__ = ("tensor", "key", "meter")

    def __init__(self, tensor: torch.Tensor, key, meter: "ActivationMeter"):
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self):
        if self.key is not None:
            self.meter._release(self.key)


class ActivationMeter:
    def __init__(self):
        self.alive = 0  # bytes of saved storages now
        self.sending = 0  # bytes of posted sends not yet complete (last `observe`)
        self.peak = 0  # of alive + sending, this step
        self.saved_peak = 0  # of alive alone, this step
        self._storages: Dict[Tuple, list] = {}  # region -> [saves alive, bytes]
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: torch.Tensor) -> _Saved:
        base = t if t._base is None else t._base
        if isinstance(base, torch.nn.Parameter) or t.layout != torch.strided:
            return _Saved(t, None, self)
        key = _region(t)
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [0, key[-1]]
            self.alive += entry[1]
            self.saved_peak = max(self.saved_peak, self.alive)
            self.peak = max(self.peak, self.alive + self.sending)
        entry[0] += 1
        return _Saved(t, key, self)

    def _release(self, key) -> None:
        entry = self._storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            del self._storages[key]
            self.alive -= entry[1]

    def saves(self, t: torch.Tensor) -> bool:
        """Whether a tensor saved for backward lives in `t`'s storage (then freeing `t` would corrupt it)."""
        ptr = t.untyped_storage().data_ptr()
        return any(key[1] == ptr for key in self._storages)

    def observe(self, send_buffers: Iterable[torch.Tensor]) -> None:
        """After an action: the buffers the transport still holds (unique storages)."""
        self.sending = sum(key[-1] for key in {_region(t) for t in send_buffers})
        self.peak = max(self.peak, self.alive + self.sending)

    def start_step(self) -> None:
        """A new step's peak starts from what is alive now (a list that worked ahead keeps outputs)."""
        self.peak, self.saved_peak = self.alive + self.sending, self.alive


def _region(t: torch.Tensor) -> Tuple:
    """(device, storage, first element, bytes): what a tensor occupies, the same for equal views."""
    return t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.numel() * t.element_size()


def _unpack(saved: _Saved) -> torch.Tensor:
    return saved.tensor


def peak_mb(meter: ActivationMeter, device: Optional[torch.device] = None) -> float:
    """Collective over the world (on `device`, the compute's): the largest step peak of any rank, in MiB."""
    buf = torch.tensor([meter.peak / MB], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return round(float(buf.item()), 3)
