"""A topology's dataset, from its factory: the preset captions and user datasets take one path.

With a preset model and no `data:` section the data is `captions` below with the preset's name.
A factory is called on every rank as `factory(args, ctx)` and returns either
- a dataset of samples (`__len__`, `__getitem__(i)` -> a sample in `MimoModel.forward`'s format),
  read through `SampleDataset` (samples.py) so each rank touches only the fields it uses; or
- a placement-aware dataset with `__len__`, `tokens(i)`, `modality(i, name)`, `num_items(i, name)`
  (what the feeder reads; the shipped `CaptionDataset` is one), used as it is.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from mimo_runtime.errors import TopologyError
from mimo_runtime.factories import NEEDS_DATA, resolve
from mimo_runtime.topology.hf import preset_of
from mimo_runtime.topology.schema import Topology

CAPTIONS_FACTORY = "mimo_runtime.data.factory:captions"
PLACED = ("tokens", "modality", "num_items")


@dataclass(frozen=True)
class DataContext:
    """What a data factory gets besides its args. split: "train", or "heldout" for evaluation."""

    split: str
    seed: int
    rank: int
    topology: Topology
    modalities: Tuple[str, ...] = field(default=())


def captions(args: Dict[str, Any], ctx: DataContext):
    """The shipped digits-captioning data as a factory: args {preset: tiny-vlm, size: 0 (default size)}."""
    from mimo_runtime.data.dataset import make_dataset

    return make_dataset(args["preset"], ctx.split, ctx.seed, int(args.get("size", 0)))


def data_factory(topology: Topology) -> Optional[Tuple[str, Dict[str, Any], str, int]]:
    """(import path, args, topology field, workers), or None: a model factory without a data section."""
    if topology.data is not None:
        return topology.data.factory, dict(topology.data.args), "data.factory", topology.data.workers
    if preset_of(topology) is not None:
        return CAPTIONS_FACTORY, {"preset": topology.model}, "model", 0
    return None


def has_data(topology: Topology) -> bool:
    return data_factory(topology) is not None


def open_dataset(topology: Topology, split: str, seed: int, rank: int, seq_length: Optional[int] = None):
    """The dataset the feeder reads on this rank (see the module doc)."""
    src = topology.source
    spec = data_factory(topology)
    if spec is None:
        raise TopologyError(src, "data", NEEDS_DATA)
    text, args, where, workers = spec
    ctx = DataContext(split, seed, rank, topology, tuple(topology.encoders))
    data = resolve(src, where, text)(args, ctx)
    if all(callable(getattr(data, m, None)) for m in PLACED) and hasattr(data, "__len__"):
        return data
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        from mimo_runtime.data.samples import SampleDataset

        return SampleDataset(data, ctx.modalities, src, where, text, workers, seq_length)
    got = "None" if data is None else f"a {type(data).__module__}.{type(data).__name__}"
    raise TopologyError(src, where, f"{text} returned {got} for split '{split}'; it must return a dataset: "
                                    f"__len__ and __getitem__(i) -> a sample (input_ids, labels, loss_mask, "
                                    f"modality_inputs)")
