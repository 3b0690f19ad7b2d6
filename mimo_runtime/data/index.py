"""The index of a LLaVA records file: checked once, before any rank starts, and cached beside the data.

Indexing parses every record, checks its conversation, its `<image>` and `<audio>` placeholders against
its images and audio clips, that each image file exists and decodes and each audio file is a readable WAV
at the feature extractor's sample rate, and tokenizes it once for its per-sample counts (tokens
before truncation, loss tokens after). Ranks then read only the index plus the records and images
they use. The cache (`FILE.mimo-index.json`) is keyed by the file's size and mtime and by everything
else the counts depend on (tokenizer files, sequence length, rows per image and clip, image and audio roots).
"""

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from mimo_runtime.data.audio_files import check_audio, features_of, load_feature_extractor
from mimo_runtime.data.chat import AUDIO, IMAGE, encode, last_item_end, load_tokenizer, messages, sample_tokens, \
    tokenizer_files
from mimo_runtime.data.images import check_image, load_processor, pixels_of
from mimo_runtime.data.records import DataError, scan

VERSION = 2
SUFFIX = ".mimo-index.json"


@dataclass(frozen=True)
class Facts:
    """What the counts depend on besides the file: from the topology's data section and model."""

    tokenizer: str
    image_root: str
    seq_length: int
    rows: int  # rows one image adds to the sequence (0: the model has no image encoder)
    image_id: Optional[int]
    image_shape: Tuple[int, int, int]
    on_error: str
    audio_root: str = ""
    audio_rows: int = 0  # rows one audio clip adds (0: the model has no audio encoder)
    audio_id: Optional[int] = None
    audio_shape: Tuple[int, ...] = ()  # (mel bins, frames) the audio encoder takes
    feature_extractor: str = ""  # directory of the WhisperFeatureExtractor's preprocessor_config.json

    @property
    def placeholders(self) -> Dict[int, int]:
        """{placeholder id: rows one item adds} of the model's encoders."""
        return {i: r for i, r in ((self.image_id, self.rows), (self.audio_id, self.audio_rows)) if r}


@dataclass(frozen=True)
class Entry:
    line: int
    offset: int
    end: int
    images: Tuple[str, ...]  # paths relative to the image root
    length: int  # tokens before truncation
    loss_tokens: int  # after truncation
    audio: Tuple[str, ...] = ()  # paths relative to the audio root


@dataclass
class Index:
    path: str
    entries: List[Entry]
    skipped: int  # bad records left out under on_error: skip
    first_error: str


def image_list(record: dict, key: str = "image") -> List[str]:
    value = record.get(key, [])
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        raise ValueError(f"{key} must be a file name or a list of file names, got {value!r:.80}")
    return items


def _entry(tok, facts: Facts, rate: int, line: int, offset: int, end: int, record) -> Entry:
    if isinstance(record, str):
        raise ValueError(record)
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    msgs = messages(record)
    images = image_list(record)
    audio = image_list(record, "audio")
    check_placeholders(msgs, images, facts, audio)
    for name in images:
        full = os.path.join(facts.image_root, name)
        if not os.path.isfile(full):
            raise ValueError(f"missing image {full}")
        try:
            check_image(full)
        except Exception as e:  # PIL raises several types for a bad file; all mean "cannot decode"
            raise ValueError(f"unreadable image {full}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    for name in audio:
        full = os.path.join(facts.audio_root, name)
        if not os.path.isfile(full):
            raise ValueError(f"missing audio {full}")
        check_audio(full, rate)
    return Entry(line, offset, end, tuple(images), *counts(tok, facts, msgs, images, audio), tuple(audio))


def check_placeholders(msgs, images: List[str], facts: Facts, audio: List[str] = ()) -> None:
    for token, items, noun, kind, rows in ((IMAGE, images, "image", "image", facts.rows),
                                           (AUDIO, audio, "audio clip", "audio", facts.audio_rows)):
        placeholders = sum(m["content"].count(token) for m in msgs)
        if placeholders != len(items):
            raise ValueError(f"{placeholders} {token} placeholder(s) but {len(items)} {noun}(s)")
        if items and not rows:
            raise ValueError(f"the record has {noun}s but the model has no {kind} encoder")


def counts(tok, facts: Facts, msgs, images=(), audio=()) -> Tuple[int, int]:
    """(tokens before truncation, loss tokens after) of a checked conversation; ValueError when its
    images or clips do not fit or no assistant token is left."""
    ids, assistant = encode(tok, msgs, facts.placeholders)
    if last_item_end(ids, facts.placeholders) > facts.seq_length:
        items = " and ".join(n for n, have in (("images", images), ("audio clips", audio)) if have) or "images"
        raise ValueError(f"its {items} end at token {last_item_end(ids, facts.placeholders)}, past seq_length "
                         f"{facts.seq_length}")
    loss = int(sample_tokens(ids, assistant, facts.seq_length, 0)["loss_mask"].sum())
    if loss == 0:
        raise ValueError(f"no assistant token is left within seq_length {facts.seq_length}")
    return len(ids), loss


def _check_processor(processor, facts: Facts) -> None:
    import numpy as np
    from PIL import Image

    shape = pixels_of(Image.fromarray(np.zeros((4, 4, 3), np.uint8)), facts.image_shape, processor).shape
    if tuple(shape) != tuple(facts.image_shape):
        raise DataError(os.path.join(facts.tokenizer, "preprocessor_config.json"), 0,
                        f"gives images of shape {tuple(shape)}; the model's vision encoder takes {facts.image_shape}")


def _check_extractor(extractor, facts: Facts) -> None:
    import numpy as np

    shape = features_of(np.zeros(extractor.n_samples, np.float32), extractor).shape
    if tuple(shape) != tuple(facts.audio_shape):
        raise DataError(os.path.join(facts.feature_extractor, "preprocessor_config.json"), 0,
                        f"gives audio features of shape {tuple(shape)} (mel bins, frames); the model's audio "
                        f"encoder takes {tuple(facts.audio_shape)}")


def build_index(path: str, facts: Facts) -> Index:
    tok = checker(facts)
    rate = 0
    if facts.audio_rows:
        extractor = load_feature_extractor(facts.feature_extractor)
        _check_extractor(extractor, facts)
        rate = extractor.sampling_rate
    entries, skipped, first = [], 0, ""
    for line, offset, end, record in scan(path):
        try:
            entries.append(_entry(tok, facts, rate, line, offset, end, record))
        except ValueError as e:
            if facts.on_error == "raise":
                raise DataError(path, line, str(e)) from None
            skipped += 1
            first = first or f"{path}:{line}: {e}"
    if not entries:
        raise DataError(path, 0, f"no usable record ({skipped} skipped; first: {first})" if skipped
                        else "no record")
    return Index(path, entries, skipped, first)


def _key(path: str, facts: Facts) -> dict:
    st = os.stat(path)
    return {"version": VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns, **asdict(facts),
            "image_shape": list(facts.image_shape), "audio_shape": list(facts.audio_shape),
            "tokenizer_files": [list(f) for f in tokenizer_files(facts.tokenizer)],
            "extractor_files": [list(f) for f in tokenizer_files(facts.feature_extractor)] if facts.audio_rows else []}


def load_index(path: str, facts: Facts) -> Index:
    """The cached index when its key matches, else a fresh one (written back when the directory allows)."""
    try:
        key = _key(path, facts)
    except OSError as e:
        raise DataError(path, 0, f"cannot read file: {e.strerror}") from None
    return cached(path + SUFFIX, key, path, lambda: build_index(path, facts))


def checker(facts: Facts):
    """The tokenizer (and a checked image processor) an index pass tokenizes with."""
    tok = load_tokenizer(facts.tokenizer, facts.image_id if facts.rows else None,
                         facts.audio_id if facts.audio_rows else None)
    processor = load_processor(facts.tokenizer)
    if processor is not None:
        _check_processor(processor, facts)
    return tok


def cached(cache: str, key: dict, path: str, build) -> Index:
    """The index of `path` stored in file `cache` under `key`, or `build()`'s, stored there when the
    directory allows."""
    try:
        with open(cache, encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("key") == key:
            return Index(path, [_entry_of(e) for e in stored["entries"]], stored["skipped"], stored["first_error"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache, or a stale or foreign one: rebuild
    index = build()
    body = {"key": key, "skipped": index.skipped, "first_error": index.first_error,
            "entries": [[e.line, e.offset, e.end, list(e.images), e.length, e.loss_tokens, list(e.audio)]
                        for e in index.entries]}
    tmp = f"{cache}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(body, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only data directory: index again next time
    return index


def _entry_of(row: list) -> Entry:
    line, offset, end, images, length, loss, audio = row
    return Entry(line, offset, end, tuple(images), length, loss, tuple(audio))
