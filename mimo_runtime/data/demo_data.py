"""The demo's dataset on disk, in LLaVA format: the digits captioning task of data/dataset.py written
as PNG images, JSONL conversations and an HF tokenizer directory, so `make demo` trains through the
path a user's own data takes (`data: {format: llava}`, docs/data.md).

Sample i of a split is CaptionDataset("tiny-vlm", split, seed)'s sample i (same images, same caption),
so the demo learns the same task as the built-in data and its accuracy figure compares. Written once
(into a temporary directory renamed into place, so an interrupted run leaves nothing half-written) and
reused while its manifest matches what would be written.
"""

import json
import os
import shutil
from typing import Dict, Sequence

DEFAULT_DIR = "runs/demo-data"
PRESET = "tiny-vlm"
SEED = 1234  # the topology's default train.seed: the split the built-in data would draw
SIZES = {"train": 4096, "heldout": 512}
VERSION = 3  # bump when what is written changes: older directories are then rewritten
SPECIAL = ["<pad>", "<s>", "</s>", "<image>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
WORDS = [str(d) for d in range(10)] + ["none", "digits", "?"]
# the built-in layout (BOS, images, caption, end): role markup or a question between the images and the
# answer puts the digits further from what they name, which this 4-layer model learns markedly slower
# (measured: 35% held-out with user/assistant markup, 83% with a question, after the demo's 300 steps)
TEMPLATE = ("<s> {% for m in messages %}{{ m['content'] }} {% if m['role'] == 'assistant' %}<|end|> {% endif %}"
            "{% endfor %}")
MANIFEST = "manifest.json"


def manifest(seed: int, sizes: Dict[str, int]) -> Dict:
    return {"version": VERSION, "preset": PRESET, "seed": seed, "sizes": dict(sizes)}


def prepare(directory: str = DEFAULT_DIR, seed: int = SEED, sizes: Dict[str, int] = SIZES) -> bool:
    """Write the dataset under `directory` unless it is already there; True when it was written."""
    want = manifest(seed, sizes)
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            if json.load(f) == want:
                return False
    except (OSError, ValueError):
        pass
    tmp = directory.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "images"))
    write_images(os.path.join(tmp, "images"))
    for split, size in sizes.items():
        write_records(os.path.join(tmp, f"{split}.jsonl"), split, seed, size)
    write_tokenizer(os.path.join(tmp, "tokenizer"))
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump(want, f)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return True


def image_name(j: int) -> str:
    return f"digit{j:04d}.png"


def write_images(directory: str) -> None:
    """Every sklearn digits image as an 8x8 grayscale PNG: value v/16 stored as round(v * 255/16), so the
    loader's /255 gives the built-in pixels back within 1/510."""
    import numpy as np
    from PIL import Image

    from mimo_runtime.data.dataset import _digits

    for j, pixels in enumerate(_digits()[0]):
        Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(os.path.join(directory, image_name(j)))


def record(dataset, i: int) -> Dict:
    """LLaVA record of sample i: one `<image>` per image, the question, and the caption as the answer."""
    images = dataset.sample(i).images
    out = {"id": f"{dataset.split}{i}",
           "conversations": [{"from": "human", "value": " ".join(["<image>"] * len(images))},
                             {"from": "gpt", "value": dataset.caption(i)}]}
    if images:
        out["image"] = image_name(images[0]) if len(images) == 1 else [image_name(j) for j in images]
    return out


def write_records(path: str, split: str, seed: int, size: int) -> None:
    from mimo_runtime.data.dataset import CaptionDataset

    dataset = CaptionDataset(PRESET, split, seed, size)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(record(dataset, i)) + "\n" for i in range(size)))


def write_tokenizer(directory: str) -> None:
    """A word-level `tokenizers` model as a PreTrainedTokenizerFast with a chat template; `<image>` has the
    model's image placeholder id (3) and the vocabulary fits tiny-vlm's 64."""
    save_word_tokenizer(directory, SPECIAL + WORDS, SPECIAL, TEMPLATE)


def save_word_tokenizer(directory: str, tokens: Sequence[str], special: Sequence[str], template: str) -> None:
    """An HF tokenizer directory over whitespace-separated words: token k of `tokens` has id k, the
    `special` ones are special tokens (`<pad>`, `<s>`, `</s>`, `<unk>` among them), `template` is its
    chat template. The demo, the balance bench and the tests write their tokenizers with it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>",
                                   additional_special_tokens=[t for t in special if t not in ("<pad>", "<s>", "</s>")])
    fast.chat_template = template
    fast.save_pretrained(directory)
