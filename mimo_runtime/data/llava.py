"""`data: {format: llava}`: LLaVA records on disk as the feeder's placement-aware dataset.

Every rank holds the index (per-sample image and audio counts, token and loss-token counts: data/index.py)
and reads only what it uses: language ranks read their records' conversations and tokenize them
(transformers is imported there, on first use), encoder ranks decode their records' images, or read
their records' audio files into the Whisper feature extractor's log-mel features (data/audio_files.py). Samples
keep their own lengths; the feeder pads each microbatch to its longest or packs it.
"""

import multiprocessing
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from mimo_runtime.data.audio_files import load_feature_extractor, load_features
from mimo_runtime.data.chat import encode, load_tokenizer, messages, sample_tokens
from mimo_runtime.data.images import load_pixels, load_processor
from mimo_runtime.data.index import Entry, Facts, Index, load_index
from mimo_runtime.data.records import DataError, read_record
from mimo_runtime.errors import TopologyError
from mimo_runtime.model.inputs import AUDIO_SHAPE, ENCODER_INPUTS, IMAGE_SHAPE, SPECIAL_TOKEN_IDS
from mimo_runtime.topology.data import hf_directory
from mimo_runtime.topology.presets import PRESETS
from mimo_runtime.topology.schema import Topology

IMAGES = "images"
AUDIO = "audio"
WORKER_TIMEOUT_S = 600.0  # a worker that loads nothing for this long is stuck, not slow
_LIVE: Dict[int, "LlavaDataset"] = {}  # worker processes find their dataset here (inherited by fork)
READS: Counter = Counter()  # what this process read (records tokenized, images decoded, clips): tests and logs


def split_files(topology: Topology, split: str):
    """(records file, image root) of `split`; the image root defaults to the records file's directory."""
    data = topology.data
    if split == "train":
        path, root = data.path, data.image_root
    elif data.heldout is None:
        raise TopologyError(topology.source, "data.heldout", "evaluation (--eval-every) needs data.heldout: {path}")
    else:
        path, root = data.heldout.path, data.heldout.image_root or data.image_root
    return path, root or os.path.dirname(path)


def facts_for(topology: Topology, split: str) -> Facts:
    return source_facts(topology, split_files(topology, split)[1])


def source_facts(topology: Topology, image_root: str) -> Facts:
    """What a records file's counts depend on besides the file (energon.py passes its directory as the root)."""
    data = topology.data
    length, rows, image_id, shape = model_facts(topology)
    audio_rows, audio_id, audio_shape = audio_facts(topology)
    return Facts(data.tokenizer, image_root, data.seq_length or length, rows, image_id, shape, data.on_error,
                 data.audio_root or image_root, audio_rows, audio_id, audio_shape,
                 (data.feature_extractor or data.tokenizer) if audio_rows else "")


def audio_facts(topology: Topology) -> Tuple[int, Optional[int], Tuple[int, ...]]:
    """(rows per clip, audio placeholder id, (mel bins, frames)) of the topology's audio encoder; a
    preset's (topology/data.py admits audio with preset models only)."""
    enc = PRESETS[topology.model].encoders.get(AUDIO) if isinstance(topology.model, str) else None
    return (enc.tokens_per_item, SPECIAL_TOKEN_IDS[AUDIO], AUDIO_SHAPE) if enc else (0, None, ())


def model_facts(topology: Topology) -> Tuple[int, int, Optional[int], Tuple[int, int, int]]:
    """(positions, rows per image, image placeholder id, image shape) of the topology's model: a
    preset's, or an HF directory's config (rows from the vision config: patches, class token,
    feature selection; the id from image_token_index, or the tokenizer's `<image>` for parts)."""
    directory = hf_directory(topology)
    if not directory:
        dims = PRESETS[topology.model]
        enc = dims.encoders.get(IMAGES)
        return (dims.language.seq_length, enc.tokens_per_item if enc else 0,
                SPECIAL_TOKEN_IDS[IMAGES] if enc else None, IMAGE_SHAPE)
    from mimo_runtime.hf.config import model_dims, parts_dims

    if topology.language.hf:
        vision = [m.hf for m in topology.encoders.values()]
        dims = parts_dims(topology.language.hf, vision[0] if vision else None)
    else:
        dims = model_dims(directory)
    v = dims.vision
    if v is None:
        return dims.language.max_positions, 0, None, IMAGE_SHAPE
    return dims.language.max_positions, v.tokens_per_item, dims.image_token_id, (v.channels, v.image_size,
                                                                                 v.image_size)


def encoder_input(topology: Topology) -> Tuple[str, str]:
    """(encoder key, input name) the image encoder reads its pixels under."""
    if not hf_directory(topology):
        return ENCODER_INPUTS[IMAGES]
    from mimo_runtime.model.families.vit import VIT_INPUT, VIT_KEY  # megatron: ranks have it loaded already

    return VIT_KEY, VIT_INPUT


def index_topology(topology: Topology, heldout: bool = False) -> Dict[str, Index]:
    """The launcher's pass: index (or find cached) every split's records; raises DataError on bad data."""
    splits = ["train"] + (["heldout"] if heldout and topology.data.heldout is not None else [])
    return {s: load_index(split_files(topology, s)[0], facts_for(topology, s)) for s in splits}


class LlavaDataset:
    """`len`, `tokens(i)`, `modality(i, name)`, `num_items(i, name)` over indexed LLaVA records."""

    def __init__(self, index: Index, facts: Facts, workers: int = 0, inputs: Tuple[str, str] = ENCODER_INPUTS[IMAGES]):
        self.index, self.facts, self.inputs = index, facts, inputs
        self.path = index.path
        self.seq_length = facts.seq_length
        self.modalities = [IMAGES] * bool(facts.rows) + [AUDIO] * bool(facts.audio_rows)
        self.workers = workers
        self._tok = None
        self._processor = None
        self._extractor = None
        self._pool = None
        self._pending: Dict[tuple, object] = {}  # (what, ids, extra) -> the workers' async result

    def __len__(self) -> int:
        return len(self.index.entries)

    def num_items(self, i: int, name: str) -> int:
        self._check_modality(name)
        e = self.index.entries[i]
        return len(e.images if name == IMAGES else e.audio)

    def tokens(self, i: int) -> Dict[str, torch.Tensor]:
        """input_ids, labels, loss_mask, position_ids of sample i: its own length, at most seq_length."""
        if self._tok is None:
            self._tok = load_tokenizer(self.facts.tokenizer, self.facts.image_id,
                                       self.facts.audio_id if self.facts.audio_rows else None)
        e = self.index.entries[i]
        try:
            msgs = messages(self._record(e))
            ids, assistant = encode(self._tok, msgs, self.facts.placeholders)
        except ValueError as err:  # the file changed since it was indexed
            raise DataError(self.path, e.line, str(err)) from None
        READS["records"] += 1
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        return sample_tokens(ids, assistant, self.seq_length, pad)

    def modality(self, i: int, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """{encoder key: {input name: (images, C, H, W)}} of sample i (0 images: a first dimension of 0);
        for audio (clips, mel bins, frames)."""
        self._check_modality(name)
        if name == AUDIO:
            return self._audio(i)
        if self._processor is None:
            self._processor = load_processor(self.facts.tokenizer) or False
        e = self.index.entries[i]
        pixels = [torch.from_numpy(p) for p in self._pixels(e)]
        READS["images"] += len(pixels)
        key, field = self.inputs
        stacked = torch.stack(pixels) if pixels else torch.zeros((0, *self.facts.image_shape))
        return {key: {field: stacked}}

    def _record(self, e: Entry) -> dict:
        """The record of index entry `e` (energon.py reads it from WebDataset shards instead)."""
        return read_record(self.path, e.offset, e.end)

    def _pixels(self, e: Entry) -> List:
        """(C, H, W) float32 arrays of entry `e`'s images."""
        out = []
        for name in e.images:
            path = os.path.join(self.facts.image_root, name)
            try:
                out.append(load_pixels(path, self.facts.image_shape, self._processor or None))
            except Exception as err:  # PIL's several error types: the image changed since it was indexed
                raise DataError(self.path, e.line, f"unreadable image {path}: {err}") from None
        return out

    def _audio(self, i: int) -> Dict[str, Dict[str, torch.Tensor]]:
        if self._extractor is None:
            self._extractor = load_feature_extractor(self.facts.feature_extractor)
        e = self.index.entries[i]
        feats = []
        for name in e.audio:
            path = os.path.join(self.facts.audio_root, name)
            try:
                feats.append(torch.from_numpy(load_features(path, self._extractor)))
            except Exception as err:  # wave's and numpy's several error types: the file changed since indexing
                raise DataError(self.path, e.line, f"unreadable audio {path}: {err}") from None
        READS["audio"] += len(feats)
        key, field = ENCODER_INPUTS[AUDIO]
        return {key: {field: torch.stack(feats) if feats else torch.zeros((0, *self.facts.audio_shape))}}

    # ---- batches: in `workers` forked processes when data.workers > 0, prefetched one microbatch ahead ----
    def tokens_batch(self, ids: Sequence[int]) -> List[Dict[str, torch.Tensor]]:
        return self._map("tokens", ids, ())

    def modality_batch(self, ids: Sequence[int], name: str) -> List[Dict[str, Dict[str, torch.Tensor]]]:
        return self._map("modality", ids, (name,))

    def prefetch(self, what: str, ids: Sequence[int], *extra) -> None:
        """Start loading a batch the feeder will ask for next (nothing to do without workers)."""
        key = (what, tuple(ids), extra)
        if self.workers and key not in self._pending:
            self._pending[key] = self._workers().starmap_async(_in_worker, [(id(self), what, i, extra) for i in ids])

    def _map(self, what: str, ids: Sequence[int], extra: tuple) -> List:
        ahead = self._pending.pop((what, tuple(ids), extra), None)
        if ahead is not None:
            return ahead.get(timeout=WORKER_TIMEOUT_S)
        if not self.workers:
            return [getattr(self, what)(i, *extra) for i in ids]
        return self._workers().starmap_async(_in_worker, [(id(self), what, i, extra) for i in ids]).get(
            timeout=WORKER_TIMEOUT_S)

    def _workers(self):
        if self._pool is None:
            _LIVE[id(self)] = self  # before the fork: the workers inherit the dataset, nothing is pickled
            self._pool = multiprocessing.get_context("fork").Pool(self.workers)
        return self._pool

    def _check_modality(self, name: str) -> None:
        if name not in self.modalities:
            raise ValueError(f"unknown modality '{name}'; this dataset has {self.modalities}")

    # ---- per-sample metadata: the same on every rank, nothing read from the records ----
    def cost(self, i: int) -> tuple:
        """(encoder rows, language tokens) of sample i: the balance cost model (data/balance.py)."""
        e = self.index.entries[i]
        return (len(e.images) * self.facts.rows + len(e.audio) * self.facts.audio_rows, min(e.length, self.seq_length))

    def loss_tokens(self, ids: Sequence[int]) -> int:
        return sum(self.index.entries[i].loss_tokens for i in ids)

    def step_metrics(self, ids: Sequence[int]) -> Dict[str, int]:
        """`data_truncated`: samples of this step cut to seq_length; `data_skipped`: bad records left out."""
        cut = sum(self.index.entries[i].length > self.seq_length for i in ids)
        return {"data_truncated": int(cut), "data_skipped": self.index.skipped}


def open_llava(args, ctx) -> LlavaDataset:
    """The data factory behind `data: {format: llava}` (topology/data.py)."""
    facts = facts_for(ctx.topology, ctx.split)
    return LlavaDataset(load_index(split_files(ctx.topology, ctx.split)[0], facts), facts, ctx.topology.data.workers,
                        encoder_input(ctx.topology))


def _in_worker(key: int, what: str, i: int, extra: tuple):
    return getattr(_LIVE[key], what)(i, *extra)
