"""LLaVA conversations -> token ids through an HF tokenizer's chat template.

Each `<image>` (`<audio>`) placeholder becomes as many copies of the model's image (audio) id as
its encoder produces rows; the loss covers exactly the assistant turns as the template renders them (its
end-of-turn markup included, so the model learns to stop). Assistant spans are found by rendering
the conversation prefix by prefix (`add_generation_prompt` before each assistant turn), then mapped
to tokens through the fast tokenizer's character offsets, so any template that renders a
conversation as the concatenation of its turns works.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from mimo_runtime.data.records import DataError

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
IMAGE = "<image>"
AUDIO = "<audio>"


def load_tokenizer(path: str, image_id: Optional[int], audio_id: Optional[int] = None):
    """The HF tokenizer in directory `path`; its `<image>` (`<audio>`) token must be the model's image
    (audio) placeholder id."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise DataError(path, 0, f"cannot load an HF tokenizer: {str(e).splitlines()[0]}") from None
    if not tok.is_fast:
        raise DataError(path, 0, "the tokenizer must be a fast tokenizer (tokenizer.json): offsets map the "
                                 "assistant turns to tokens")
    if not tok.chat_template:
        raise DataError(path, 0, "the tokenizer has no chat template (chat_template in tokenizer_config.json "
                                 "or chat_template.jinja)")
    for token, want, what in ((IMAGE, image_id, "image"), (AUDIO, audio_id, "audio")):
        got = tok.convert_tokens_to_ids(token) if want is not None else want
        if got != want:
            raise DataError(path, 0, f"the tokenizer's {token} token has id {got}; the model's {what} placeholder "
                                     f"id is {want} (add {token} as a special token with that id)")
    return tok


def tokenizer_files(path: str) -> List[Tuple[str, int, int]]:
    """(name, size, mtime_ns) of the tokenizer directory's files: part of the index's cache key."""
    out = []
    for name in sorted(os.listdir(path)):
        st = os.stat(os.path.join(path, name))
        out.append((name, st.st_size, st.st_mtime_ns))
    return out


def messages(record: dict) -> List[Dict[str, str]]:
    """The record's conversation as chat messages; ValueError(message) when it is malformed."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError("record has no conversations (a non-empty list of {from, value})")
    out = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{k}] must be {{from: human|gpt|system, value: text}}, got {turn!r:.80}")
        out.append({"role": ROLES[turn["from"]], "content": turn["value"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("record has no gpt turn (no token to learn)")
    return out


def encode(tok, msgs: Sequence[Dict[str, str]], rows: Dict[int, int]) -> Tuple[List[int], List[int]]:
    """(token ids with each placeholder id p expanded to rows[p] ids, 1 where the token belongs to an
    assistant turn)."""
    def render(m, prompt=False) -> str:
        return tok.apply_chat_template(list(m), tokenize=False, add_generation_prompt=prompt) if m else ""

    text = render(msgs)
    spans = []
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head, upto = render(msgs[:k], prompt=True), render(msgs[:k + 1])
        if not (text.startswith(upto) and upto.startswith(head)):
            raise ValueError("the tokenizer's chat template does not render a conversation as the concatenation "
                             "of its turns; assistant tokens cannot be found")
        spans.append((len(head), len(upto)))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, assistant = [], []
    for t, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]):
        flag = int(any(a <= start < b for a, b in spans))
        if t in rows:
            ids += [t] * rows[t]
            assistant += [0] * rows[t]
        else:
            ids.append(t)
            assistant.append(flag)
    return ids, assistant


def sample_tokens(ids: List[int], assistant: List[int], seq_length: int, pad: int) -> Dict[str, torch.Tensor]:
    """The training fields of one sample, cut to `seq_length`: labels are next tokens, loss_mask is 1
    where the label is an assistant token."""
    n = min(len(ids), seq_length)
    labels = ids[1:n + 1] + [pad] * (n - len(ids[1:n + 1]))
    mask = assistant[1:n + 1] + [0] * (n - len(assistant[1:n + 1]))
    return {"input_ids": torch.tensor(ids[:n], dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
            "loss_mask": torch.tensor(mask, dtype=torch.float32), "position_ids": torch.arange(n)}


def last_item_end(ids: List[int], placeholders: Dict[int, int]) -> int:
    """Tokens through the last image or audio row: truncation may not cut an item's rows."""
    hits = [p for p, t in enumerate(ids) if t in placeholders]
    return hits[-1] + 1 if hits else 0
