"""`data: {format: llava|energon, ...}` or `data: {blend: [...]}`: datasets on disk (docs/data.md),
beside `data: {factory, args}`.

The section is read by `parse_data` (called by parse.py when the mapping has a `format` or `blend` key) and
checked against the model by `check_data` (called by validate.finalize). Paths are relative to the
topology file's directory. It behaves as a data factory (`factory`, `args`, `workers`), so the runtime
opens it the way it opens any user dataset (mimo_runtime/data/factory.py).
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mimo_runtime.errors import TopologyError
from mimo_runtime.topology.presets import PRESETS
from mimo_runtime.topology.schema import REQUIRED, Topology, spec

FORMATS = ("llava", "energon")
FILES_FACTORY = "mimo_runtime.data.sources:open_files"
DEFAULT_POSITIONS = 4096  # an HF config without max_position_embeddings (hf/config.py assumes the same)


@dataclass(frozen=True)
class Heldout:
    path: str = spec(REQUIRED, "JSON or JSONL file of held-out records (for --eval-every); energon: a dataset "
                               "directory, its val split")
    image_root: str = spec("", "directory the records' image paths are relative to; default data.image_root")
    format: str = spec("", "llava or energon; default data.format (required with blend)", choices=FORMATS)


@dataclass(frozen=True)
class BlendPart:
    weight: float = spec(REQUIRED, "the part's share of the blend (relative to the other weights)", positive=True)
    format: str = spec(REQUIRED, "llava or energon, as data.format", choices=FORMATS)
    path: str = spec(REQUIRED, "as data.path")
    image_root: str = spec("", "as data.image_root")


@dataclass(frozen=True)
class DataFiles:
    format: str = spec("", "llava: JSON or JSONL records {id, image, audio, conversations}; energon: a "
                           "megatron-energon dataset directory (or metadataset YAML); required unless blend",
                       choices=FORMATS)
    path: str = spec("", "the records file, or the energon dataset; required unless blend")
    image_root: str = spec("", "directory the records' image paths are relative to; default: the file's directory")
    blend: Tuple[BlendPart, ...] = spec((), "a weighted mixture [{weight, format, path, image_root}] instead of "
                                            "format and path (data/blend.py)")
    tokenizer: str = spec("", "an HF tokenizer directory with a chat template (an image processor's "
                              "preprocessor_config.json there is used for images); default: the model's hf "
                              "directory (required for a preset model)")
    seq_length: int = spec(0, "tokens per sample, longer samples are truncated (counted); default the model's",
                           positive=True)
    heldout: Optional[Heldout] = spec(None, "{path, image_root} of held-out records")
    audio_root: str = spec("", "directory the records' audio (WAV) paths are relative to; default: the image root")
    feature_extractor: str = spec("", "directory with a WhisperFeatureExtractor's preprocessor_config.json for "
                                      "audio; default: data.tokenizer")
    packing: bool = spec(False, "pack each microbatch into one THD sequence (sets train.packing)")
    on_error: str = spec("raise", "raise: stop at the first bad record; skip: leave bad records out, counted",
                         choices=("raise", "skip"))
    balance: bool = spec(False, "order each global batch so microbatches and DP replicas get even image and "
                                "token work (data/balance.py)")
    workers: int = spec(0, "data-loading worker processes per rank; 0 loads in the rank itself", min_value=0)

    @property
    def factory(self) -> str:
        return FILES_FACTORY

    @property
    def formats(self) -> Tuple[str, ...]:
        return tuple(p.format for p in self.blend) if self.blend else (self.format,)

    @property
    def args(self) -> Dict[str, Any]:
        return {}  # the dataset reads this section from the topology it is given


def parse_data(raw: Any, src: str) -> DataFiles:
    from mimo_runtime.topology.parse import build

    data = build(DataFiles, raw, src, "data")
    if data.blend and (data.format or data.path):
        raise TopologyError(src, "data.blend", "give either blend or format and path, not both")
    if not data.blend:
        for key in ("format", "path"):
            if not getattr(data, key):
                raise TopologyError(src, f"data.{key}", "required key is missing (or give data.blend)")
    if data.blend and data.heldout and not data.heldout.format:
        raise TopologyError(src, "data.heldout.format", "required with data.blend (llava or energon)")
    base = os.path.dirname(src) if os.path.isfile(src) else ""

    def at(p: str) -> str:
        return os.path.join(base, p) if p else p

    heldout = data.heldout and dataclasses.replace(data.heldout, path=at(data.heldout.path),
                                                   image_root=at(data.heldout.image_root))
    blend = tuple(dataclasses.replace(p, path=at(p.path), image_root=at(p.image_root)) for p in data.blend)
    return dataclasses.replace(data, path=at(data.path), image_root=at(data.image_root),
                               audio_root=at(data.audio_root), feature_extractor=at(data.feature_extractor),
                               tokenizer=at(data.tokenizer), heldout=heldout, blend=blend)


def hf_directory(topo: Topology) -> str:
    """The HF directory a data section's tokenizer and length default to: `model.hf`, or the language
    module's `modules.NAME.hf`; "" for a preset."""
    if topo.language.hf:
        return topo.language.hf
    return "" if isinstance(topo.model, str) else topo.model.hf


def check_data(topo: Topology) -> Topology:
    """Rules between the data section and the model; `packing` switches on the packed path."""
    data, src = topo.data, topo.source
    if not isinstance(data, DataFiles):
        return topo
    hf = hf_directory(topo)
    if not hf and not isinstance(topo.model, str):
        raise TopologyError(src, "data.format", f"format: {data.formats[0]} needs a preset model (one of "
                                                f"{', '.join(sorted(PRESETS))}) or model: {{hf: DIR}}; a model "
                                                f"factory reads its own data through data: {{factory, args}}")
    other = sorted(n for n in topo.encoders if n not in ("images", "audio"))
    if other:
        raise TopologyError(src, "data.format", f"format: {data.formats[0]} carries images and audio only; the "
                                                f"topology has encoder '{other[0]}'")
    if "audio" in topo.encoders and hf:
        raise TopologyError(src, "data.format", "audio samples need a preset model's audio encoder; an HF "
                                                "model directory here has a vision tower only")
    longest = _hf_positions(hf) if hf else PRESETS[topo.model].language.seq_length
    if longest and data.seq_length > longest:
        raise TopologyError(src, "data.seq_length", f"{data.seq_length} is longer than the model's "
                                                    f"{longest} positions")
    if not data.tokenizer:
        if not hf:
            raise TopologyError(src, "data.tokenizer", "required with a preset model (an HF tokenizer directory "
                                                       "with a chat template)")
        data = dataclasses.replace(data, tokenizer=hf)  # an HF model directory carries its tokenizer files
        topo = dataclasses.replace(topo, data=data)
    held = data.heldout and (data.heldout.format or data.format)
    paths = [("path", data.path, data.format), ("tokenizer", data.tokenizer, "dir"),
             ("heldout.path", data.heldout.path if data.heldout else "", held),
             ("feature_extractor", data.feature_extractor, "dir")]
    paths += [(f"blend[{k}].path", p.path, p.format) for k, p in enumerate(data.blend)]
    for field, path, kind in paths:
        if path and not _exists(path, kind):
            raise TopologyError(src, f"data.{field}", f"no such {_KINDS[kind]}: {path}")
    if data.packing and not topo.train.packing:
        topo = dataclasses.replace(topo, train=dataclasses.replace(topo.train, packing=True))
    return topo


_KINDS = {"dir": "directory", "llava": "file", "energon": "energon dataset directory or metadataset YAML"}


def _exists(path: str, kind: str) -> bool:
    if kind == "dir":
        return os.path.isdir(path)
    if kind == "energon":
        return os.path.isdir(path) or os.path.isfile(path)
    return os.path.isfile(path)


def _hf_positions(directory: str) -> int:
    """The language model's max_position_embeddings (0 when config.json is unreadable: topology/hf.py's
    check reports that, once)."""
    from mimo_runtime.topology.hf import read_config

    try:
        cfg = read_config(directory)[1]
    except TopologyError:
        return 0
    positions = cfg.get("text_config", cfg).get("max_position_embeddings", DEFAULT_POSITIONS)
    return positions if isinstance(positions, int) and positions > 0 else 0
