"""`data: {format: energon}`: a megatron-energon dataset (WebDataset tar shards + `.nv-meta/`), read
with megatron-energon itself, as the same samples `format: llava` gives.

energon shards a dataset by rank and worker, which would make the sample order depend on the
topology. Here every rank opens the same reader, as rank 0 of 1 with no worker processes, and
fetches the samples the runtime's sampler assigns it by their index in the split, through
energon's own restore path (`restore_sample`, what its savable loader resumes with). The data
position is then the sampler's (`samples_seen` in every checkpoint), so resume is exact on every
topology. The reader returns raw bytes (no energon decoder): language ranks decode only the text,
encoder ranks only the images.

Samples become LLaVA conversations:
- `CaptioningSample`: a user turn `<image>`, the caption as the assistant's turn;
- `VQASample`: `<image>\\n` + the context as the user turn, the best-weighted answer as the assistant's;
- crude samples (`CrudeWebdataset`): a `json` part holding a LLaVA record (`conversations`, and
  `image`: the names of the sample's parts that hold its images, e.g. `["0.png", "1.png"]`; 0..k).
The index (image names, token and loss-token counts per sample: data/index.py) is built once
before any rank starts and cached in the dataset's `.nv-meta/`.
"""

import io
import json
import os
from typing import Dict, List, Optional, Tuple

from mimo_runtime.data.chat import messages
from mimo_runtime.data.images import pixels_of
from mimo_runtime.data.index import (VERSION, Entry, Facts, Index, cached, check_placeholders, checker, counts,
                                     image_list)
from mimo_runtime.data.llava import LlavaDataset, encoder_input, source_facts
from mimo_runtime.data.records import DataError
from mimo_runtime.topology.schema import Topology

META = ".nv-meta"
CACHE = "mimo-index.{split}.json"
SUPPORTED = "CaptioningSample, VQASample, or crude samples (CrudeWebdataset) with a json part"


class Reader:
    """One split of an energon dataset, read by sample index. `leaf` picks one dataset of a metadataset
    (energon's own YAML blend); opened lazily, once per process, so forked data workers open their own.
    `parts`: "text" or "images" reads only those tar members of crude samples (the json part, or the
    others), so a language rank does not even read image bytes and an encoder rank no record; other
    sample types map all their fields and are read whole."""

    def __init__(self, path: str, split: str, leaf: int = 0, parts: Optional[str] = None):
        self.path, self.split, self.leaf, self.parts = path, split, leaf, parts
        self._open = None  # (pid, worker config, factory, dataset)

    def _opened(self):
        if self._open is None or self._open[0] != os.getpid():
            from megatron.energon import CrudeSample

            config, loaded = open_split(self.path, self.split)
            factory = loaded[self.leaf][0]
            if self.parts and factory.__sample_type__ is CrudeSample:
                # the reader's member filter (BaseWebdatasetFactory.part_filter, read by build()): filtered
                # members are skipped in the tar, never read
                factory.part_filter = (lambda p: p == "json") if self.parts == "text" else (lambda p: p != "json")
            self._open = [os.getpid(), config, factory, None]  # the dataset is built on the first sample read
        return self._open

    @property
    def factory(self):
        return self._opened()[2]

    def __len__(self) -> int:
        return len(self.factory)

    def sample(self, i: int):
        """Sample i of the split, fields as raw bytes; the key is energon's restore key for it."""
        opened = self._opened()
        if opened[3] is None:
            opened[3] = opened[2].build()
        config, dataset = opened[1], opened[3]
        config.worker_activate(i)
        try:
            return dataset.restore_sample((type(dataset).__name__, i, "Webdataset", i))
        finally:
            config.worker_deactivate()


def open_split(path: str, split: str) -> Tuple[object, List[Tuple[object, float]]]:
    """(energon worker config, [(dataset factory, weight)]) of one split: one dataset for a prepared
    directory, several for a metadataset YAML. DataError(path) when energon cannot open it."""
    if os.path.isdir(path) and not os.path.isdir(os.path.join(path, META)):
        raise DataError(path, 0, f"not a megatron-energon dataset: no {META}/ (prepare it with `energon prepare`)")
    from megatron.energon import WorkerConfig, load_dataset

    config = WorkerConfig(rank=0, world_size=1, num_workers=0)
    try:
        loaded = load_dataset(path).get_datasets(training=False, split_part=split, worker_config=config, decoder=None)
    except Exception as e:  # energon raises several types for a bad directory or YAML
        raise DataError(path, 0, f"megatron-energon cannot open split '{split}': {_first_line(e)}") from None
    out = []
    for d in loaded.datasets:
        factory = d.dataset
        if type(factory).__name__ == "CrudeJsonlDatasetFactory" or not hasattr(factory, "shards"):
            raise DataError(path, 0, f"{type(factory).__name__}: only WebDataset shards are read (crude JSONL "
                                     f"datasets are not)")
        out.append((factory, 1.0 if d.weight is None else float(d.weight)))
    return config, out


def as_record(sample, images: bool = True) -> Tuple[dict, Dict[str, object]]:
    """(a LLaVA record, {image name: raw image}) of one energon sample; ValueError when it has none.
    `images=False`: the record alone (a text reader has no image parts)."""
    from megatron.energon import CaptioningSample, CrudeSample, VQASample

    if isinstance(sample, CaptioningSample):
        return {"conversations": [{"from": "human", "value": "<image>"},
                                  {"from": "gpt", "value": _text(sample.caption)}], "image": ["image"]}, \
            {"image": sample.image}
    if isinstance(sample, VQASample):
        return {"conversations": [{"from": "human", "value": "<image>\n" + _text(sample.context)},
                                  {"from": "gpt", "value": _answer(sample.answers, sample.answer_weights)}],
                "image": ["image"]}, {"image": sample.image}
    if isinstance(sample, CrudeSample):
        if "json" not in sample:
            raise ValueError(f"a crude sample needs a json part with a LLaVA record; it has parts "
                             f"{', '.join(k for k in sample if not k.startswith('__'))}")
        try:
            record = json.loads(_text(sample["json"]))
        except ValueError as e:
            raise ValueError(f"broken JSON in its json part: {e}") from None
        if not isinstance(record, dict):
            raise ValueError(f"its json part must be an object, got {type(record).__name__}")
        raw = {}
        for name in image_list(record) if images else []:
            if name not in sample:
                raise ValueError(f"no part '{name}' (named in its record's image list)")
            raw[name] = sample[name]
        return record, raw
    raise ValueError(f"energon sample type {type(sample).__name__} is not read; use {SUPPORTED}")


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _answer(answers, weights) -> str:
    """A VQA sample's answer: the one with the largest weight (the first of equals)."""
    if isinstance(answers, bytes):
        text = answers.decode("utf-8")
        try:
            answers = json.loads(text)
        except ValueError:
            answers = text
    if isinstance(answers, str):
        return answers
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"answers must be text or a non-empty list of texts, got {answers!r:.80}")
    try:
        w = [float(x) for x in (json.loads(weights) if isinstance(weights, bytes) else weights)]
    except (TypeError, ValueError):
        w = []
    return answers[max(range(len(answers)), key=lambda k: (w[k], -k))] if len(w) == len(answers) else answers[0]


def _image(value):
    """A PIL image of raw image bytes (or of an image energon already decoded)."""
    from PIL import Image

    if isinstance(value, bytes):
        im = Image.open(io.BytesIO(value))
        im.load()
        return im
    if isinstance(value, Image.Image):
        return value
    raise ValueError(f"an image part must hold image bytes, got {type(value).__name__}")


def _where(reader: Reader, sample, i: int) -> Tuple[str, str]:
    """(shard file, 'sample KEY') naming a sample in an error."""
    sources = getattr(sample, "__sources__", None) or (sample.get("__sources__") if isinstance(sample, dict) else None)
    shard = sources[0].shard_name if sources else ""
    key = getattr(sample, "__key__", None) or (sample.get("__key__") if isinstance(sample, dict) else None)
    return os.path.join(reader.path, shard) if shard else reader.path, f"sample {key or i}"


def _entry(tok, facts: Facts, i: int, sample) -> Entry:
    """Sample i checked (record, placeholders against images, images decoded) and counted; ValueError if bad."""
    record, images = as_record(sample)
    msgs = messages(record)
    names = image_list(record)
    check_placeholders(msgs, names, facts)
    for name in names:
        try:
            _image(images[name])
        except ValueError:
            raise
        except Exception as e:  # PIL raises several types for bad bytes; all mean "cannot decode"
            raise ValueError(f"unreadable image {name}: {_first_line(e)}") from None
    return Entry(i, 0, 0, tuple(names), *counts(tok, facts, msgs))


def build_index(reader: Reader, facts: Facts) -> Index:
    """Every sample of the split read once, checked and counted."""
    tok = checker(facts)
    entries, skipped, first = [], 0, ""
    for i in range(len(reader)):
        try:
            sample = reader.sample(i)
        except Exception as e:  # a shard energon cannot read (several error types)
            sample, error = None, f"cannot read: {_first_line(e)}"
        else:
            try:
                entries.append(_entry(tok, facts, i, sample))
                continue
            except ValueError as e:
                error = str(e)
        shard, what = _where(reader, sample, i)
        if facts.on_error == "raise":
            raise DataError(shard, 0, f"{what}: {error}")
        skipped += 1
        first = first or f"{shard}: {what}: {error}"
    if not entries:
        raise DataError(reader.path, 0, f"no usable sample in split '{reader.split}' ({skipped} skipped; first: "
                                        f"{first})" if skipped else f"split '{reader.split}' has no samples")
    return Index(reader.path, entries, skipped, first)


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def load_index(reader: Reader, facts: Facts) -> Index:
    """The cached index (in the dataset's .nv-meta/) when its key matches, else a fresh one."""
    from mimo_runtime.data.chat import tokenizer_files

    factory = reader.factory
    try:
        shards = [[s.name, os.stat(str(s.path)).st_size, os.stat(str(s.path)).st_mtime_ns] for s in factory.shards]
        with open(os.path.join(str(factory.path), META, "index.uuid"), encoding="utf-8") as f:
            uuid = f.read().strip()
    except OSError as e:
        raise DataError(reader.path, 0, f"cannot read the dataset: {e.strerror}: {e.filename}") from None
    key = {"version": VERSION, "split": reader.split, "leaf": reader.leaf, "uuid": uuid, "shards": shards,
           "samples": len(factory), "tokenizer": facts.tokenizer, "seq_length": facts.seq_length, "rows": facts.rows,
           "image_id": facts.image_id, "image_shape": list(facts.image_shape), "on_error": facts.on_error,
           "tokenizer_files": [list(f) for f in tokenizer_files(facts.tokenizer)]}
    cache = os.path.join(str(factory.path), META, CACHE.format(split=reader.split))
    return cached(cache, key, reader.path, lambda: build_index(reader, facts))


class EnergonDataset(LlavaDataset):
    """The placement-aware dataset of one energon dataset split (LlavaDataset's counts, batches and
    workers over an index whose entries name energon sample indices). Tokens come through a reader of
    the samples' text, pixels through one of their images (opened on first use: a rank opens only the
    one its stage needs)."""

    def __init__(self, reader: Reader, index: Index, facts: Facts, workers: int = 0, inputs=None):
        super().__init__(index, facts, workers, *([inputs] if inputs else []))
        self.readers = {p: Reader(reader.path, reader.split, reader.leaf, p) for p in ("text", "images")}

    def _record(self, e: Entry) -> dict:
        return as_record(self.readers["text"].sample(e.line), images=False)[0]

    def _pixels(self, e: Entry) -> List:
        reader = self.readers["images"]
        sample = reader.sample(e.line)
        try:  # the index holds the image names: the record is not read again
            raw = [sample[n] if isinstance(sample, dict) else getattr(sample, n) for n in e.images]
            return [pixels_of(_image(r), self.facts.image_shape, self._processor or None) for r in raw]
        except Exception as err:  # the shards changed since they were indexed
            shard, what = _where(reader, sample, e.line)
            raise DataError(shard, 0, f"{what}: unreadable image: {err}") from None


def readers(path: str, split: str) -> List[Tuple[Reader, float]]:
    """[(reader, weight)] of a dataset directory (one) or a metadataset YAML (one per dataset it blends)."""
    _, loaded = open_split(path, split)
    if len(loaded) == 1 and os.path.isdir(path):
        return [(Reader(path, split), 1.0)]
    return [(Reader(path, split, k), w) for k, (_, w) in enumerate(loaded)]


def energon_split(split: str) -> str:
    """The energon split part a runtime split reads: training from `train`, held-out evaluation from `val`."""
    return "train" if split == "train" else "val"


def open_energon(topology: Topology, path: str, split: str, workers: int, seed: int, index_only: bool = False):
    """The dataset (a blend for a metadataset, keyed by `seed`) of energon `path` for runtime split
    `split`; with `index_only` the indexes alone (the launcher's pass)."""
    from mimo_runtime.data.blend import BlendDataset

    facts = source_facts(topology, path)
    parts = []
    for reader, weight in readers(path, energon_split(split)):
        index = load_index(reader, facts)
        parts.append((None if index_only else EnergonDataset(reader, index, facts, workers, encoder_input(topology)),
                      weight, index))
    if index_only:
        return [index for _, _, index in parts]
    if len(parts) == 1 and os.path.isdir(path):
        return parts[0][0]
    return BlendDataset([d for d, _, _ in parts], [w for _, w, _ in parts], seed)


def prepare(path: str, sample_type: str, field_map: Optional[Dict[str, str]] = None,
            split: Tuple[float, float, float] = (1.0, 0.0, 0.0)) -> None:
    """Prepare a directory of tar shards with energon's own preparation, non-interactively (what
    `energon prepare PATH --non-interactive --split-ratio ... --sample-type ... --field-map ...` runs)."""
    from click.testing import CliRunner
    from megatron.energon.tools.prepare import command

    args = [path, "--non-interactive", "--no-progress", "--split-ratio", ",".join(str(x) for x in split),
            "--sample-type", sample_type]
    if field_map:
        args += ["--field-map", json.dumps(field_map)]
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"energon prepare {path} failed: {result.output[-2000:]}")
