"""The datasets on disk a `data:` section names (topology/data.py), by format: index them before any
rank starts, and open them on each rank.

A split's sources are the section's one (format, path, image_root), or its blend's parts; held-out
evaluation reads `data.heldout` (for energon: the `val` split of that dataset). One source opens as
its format's dataset (llava.py, energon.py); several as their blend (blend.py).
"""

import os
from dataclasses import dataclass
from typing import List

from mimo_runtime.data.index import Index
from mimo_runtime.errors import TopologyError
from mimo_runtime.topology.schema import Topology


@dataclass(frozen=True)
class Source:
    format: str
    path: str
    image_root: str  # llava: resolved (default: the records file's directory); energon: unused
    weight: float = 1.0


def split_sources(topology: Topology, split: str) -> List[Source]:
    data = topology.data
    if split != "train":
        if data.heldout is None:
            raise TopologyError(topology.source, "data.heldout",
                                "evaluation (--eval-every) needs data.heldout: {path}")
        h = data.heldout
        return [_source(h.format or data.format, h.path, h.image_root or data.image_root, 1.0)]
    if data.blend:
        return [_source(p.format, p.path, p.image_root or data.image_root, p.weight) for p in data.blend]
    return [_source(data.format, data.path, data.image_root, 1.0)]


def _source(fmt: str, path: str, image_root: str, weight: float) -> Source:
    return Source(fmt, path, image_root or (os.path.dirname(path) if fmt == "llava" else ""), weight)


def index_data(topology: Topology, heldout: bool = False) -> List[Index]:
    """The launcher's pass (and `mimo-run check`'s): index, or find cached, every source of the training
    split (and the held-out one); raises DataError (`error: FILE:LINE: ...`, `error: PATH: ...`) on bad data."""
    splits = ["train"] + (["heldout"] if heldout and topology.data.heldout is not None else [])
    out = []
    for split in splits:
        for s in split_sources(topology, split):
            out += _open(topology, s, split, 0, index_only=True)
    return out


def open_files(args, ctx):
    """The data factory behind every `data: {format | blend}` section (topology/data.py)."""
    from mimo_runtime.data.blend import BlendDataset

    sources = split_sources(ctx.topology, ctx.split)
    parts = [_open(ctx.topology, s, ctx.split, ctx.topology.data.workers, seed=ctx.seed) for s in sources]
    if len(parts) == 1:
        return parts[0]
    return BlendDataset(parts, [s.weight for s in sources], ctx.seed)


def _open(topology: Topology, s: Source, split: str, workers: int, index_only: bool = False, seed: int = 0):
    if s.format == "energon":
        from mimo_runtime.data.energon import open_energon

        return open_energon(topology, s.path, split, workers, seed, index_only)
    from mimo_runtime.data.index import load_index
    from mimo_runtime.data.llava import LlavaDataset, encoder_input, source_facts

    facts = source_facts(topology, s.image_root)
    index = load_index(s.path, facts)
    return [index] if index_only else LlavaDataset(index, facts, workers, encoder_input(topology))
