"""megatron-energon datasets written by the tests: WebDataset tar shards, prepared with energon's own
`energon prepare` (non-interactive), beside the LLaVA files of llava_files.py with the same samples."""

import io
import json
import os
import tarfile
from typing import Dict, List, Optional

from tests.data.llava_files import record, write_dataset, write_image


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_shards(directory: str, samples: List[Dict[str, bytes]], per_shard: int = 5) -> str:
    """samples[i] = {part: bytes} -> DIR/shard_K.tar with keys s000, s001, ..."""
    os.makedirs(directory, exist_ok=True)
    for k in range(0, len(samples), per_shard):
        with tarfile.open(os.path.join(directory, f"shard_{k // per_shard}.tar"), "w") as tar:
            for i, parts in enumerate(samples[k:k + per_shard], start=k):
                for part, data in parts.items():
                    _add(tar, f"s{i:03d}.{part}", data)
    return directory


def crude_from_llava(directory: str, records: List[Dict], image_root: str, per_shard: int = 5,
                     split=(1.0, 0.0, 0.0)) -> str:
    """The LLaVA records as crude samples: a json part (the record, images renamed to their parts
    0.png, 1.png, ...) and one png part per image; prepared with energon."""
    from mimo_runtime.data.energon import prepare

    samples = []
    for r in records:
        value = r.get("image", [])
        names = [value] if isinstance(value, str) else list(value)
        rec = {k: v for k, v in r.items() if k != "image"}
        if names:
            rec["image"] = [f"{k}.png" for k in range(len(names))]
        parts = {"json": json.dumps(rec).encode()}
        parts.update({f"{k}.png": _png(os.path.join(image_root, n)) for k, n in enumerate(names)})
        samples.append(parts)
    write_shards(directory, samples, per_shard)
    prepare(directory, "CrudeWebdataset", split=split)
    return directory


def write_energon_dataset(directory: str, n: int = 16, image_counts: Optional[List[int]] = None,
                          split=(1.0, 0.0, 0.0)) -> Dict[str, str]:
    """LLaVA files (llava_files.write_dataset) and the same records as an energon crude dataset at DIR/energon."""
    files = write_dataset(directory, n=n, image_counts=image_counts)
    with open(files["path"], encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    crude_from_llava(os.path.join(directory, "energon"), records, files["image_root"], split=split)
    return {**files, "energon": os.path.join(directory, "energon")}


def write_captioning(directory: str, captions: List[str]) -> str:
    """A CaptioningSample dataset: png + txt parts."""
    from mimo_runtime.data.energon import prepare

    samples = []
    for i, caption in enumerate(captions):
        path = os.path.join(directory + ".tmp.png")
        write_image(path, seed=i)
        samples.append({"png": _png(path), "txt": caption.encode()})
        os.remove(path)
    write_shards(directory, samples)
    prepare(directory, "CaptioningSample", {"image": "png", "caption": "txt"})
    return directory


def write_vqa(directory: str, questions: List[str], answers: List[List[str]], weights: List[List[float]]) -> str:
    """A VQASample dataset: png, question txt, answers and weights as JSON parts."""
    from mimo_runtime.data.energon import prepare

    samples = []
    for i, (q, a, w) in enumerate(zip(questions, answers, weights)):
        path = os.path.join(directory + ".tmp.png")
        write_image(path, seed=50 + i)
        samples.append({"png": _png(path), "txt": q.encode(), "answers.json": json.dumps(a).encode(),
                        "weights.json": json.dumps(w).encode()})
        os.remove(path)
    write_shards(directory, samples)
    prepare(directory, "VQASample", {"image": "png", "context": "txt", "answers": "answers.json",
                                     "answer_weights": "weights.json"})
    return directory


__all__ = ["write_shards", "crude_from_llava", "write_energon_dataset", "write_captioning", "write_vqa", "record"]
