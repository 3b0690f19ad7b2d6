"""A character tokenizer whose special ids match the model's (`mimo_runtime.model.inputs`)."""

from typing import Iterable, List

from mimo_runtime.model.inputs import SPECIAL_TOKEN_IDS

PAD, BOS, EOS = 0, 1, 2
CHARS = " 0123456789abcdefghijklmnopqrstuvwxyz:;,.|"
_FIRST_CHAR = max(SPECIAL_TOKEN_IDS.values()) + 1


class Tokenizer:
    """ids: PAD 0, BOS 1, EOS 2, one placeholder per modality, then one per character of CHARS."""

    pad, bos, eos = PAD, BOS, EOS
    special_token_ids = dict(SPECIAL_TOKEN_IDS)
    vocab_size = _FIRST_CHAR + len(CHARS)

    def encode(self, text: str) -> List[int]:
        bad = sorted(set(text) - set(CHARS))
        if bad:
            raise ValueError(f"characters {bad} are not in the tokenizer's alphabet {CHARS!r}")
        return [_FIRST_CHAR + CHARS.index(c) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Characters only; PAD/BOS/EOS and modality placeholders are dropped."""
        return "".join(CHARS[i - _FIRST_CHAR] for i in map(int, ids) if _FIRST_CHAR <= i < self.vocab_size)
