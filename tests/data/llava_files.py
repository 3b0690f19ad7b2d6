"""LLaVA-format datasets written by the tests: PNG images, JSONL or JSON records, an HF tokenizer dir.

The tokenizer is a `tokenizers` WordLevel model wrapped in `PreTrainedTokenizerFast` and saved with a
chat template; `<image>` has the model's image placeholder id (3), and the vocabulary fits tiny-vlm's 64.
"""

import json
import os
from typing import Dict, List, Optional

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "what", "digit", "digits",
         "is", "this", "?", "say", "hello", "none", "and", "describe"]
SPECIAL = ["<pad>", "<s>", "</s>", "<image>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def write_tokenizer(directory: str) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", additional_special_tokens=SPECIAL[3:])
    fast.chat_template = TEMPLATE
    fast.save_pretrained(directory)
    return directory


def write_image(path: str, seed: int, size: int = 8) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)


def record(i: int, images: int, answer_words: int = 1) -> Dict:
    """Sample i with `images` images: a question, then an answer of digit words."""
    names = [f"img{i}_{k}.png" for k in range(images)]
    question = "<image> " * images + ("what digits ?" if images else "say hello")
    answer = " ".join(WORDS[(i + k) % 10] for k in range(answer_words))
    out = {"id": f"s{i}", "conversations": [{"from": "human", "value": question.strip()},
                                            {"from": "gpt", "value": answer}]}
    if names:
        out["image"] = names[0] if len(names) == 1 else names
    return out


def write_dataset(directory: str, n: int = 16, image_counts: Optional[List[int]] = None, fmt: str = "jsonl",
                  records: Optional[List[Dict]] = None, name: str = "train") -> Dict[str, str]:
    """images/, NAME.jsonl (or .json, an indented array) and tokenizer/ under `directory`."""
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    counts = image_counts or [i % 3 for i in range(n)]
    recs = records if records is not None else [record(i, counts[i], 1 + i % 3) for i in range(n)]
    for r in recs:
        value = r.get("image", [])
        for k, img in enumerate([value] if isinstance(value, str) else value):
            path = os.path.join(directory, "images", img)
            if not os.path.exists(path):
                write_image(path, seed=hash(img) % 10_000)
    path = os.path.join(directory, f"{name}.{fmt}")
    with open(path, "w", encoding="utf-8") as f:
        if fmt == "jsonl":
            f.write("".join(json.dumps(r) + "\n" for r in recs))
        else:
            json.dump(recs, f, indent=2)
    tok = os.path.join(directory, "tokenizer")
    if not os.path.isdir(tok):
        write_tokenizer(tok)
    return {"path": path, "image_root": os.path.join(directory, "images"), "tokenizer": tok}
