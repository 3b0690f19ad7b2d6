"""LLaVA record files: JSONL (one record a line) or a JSON array, read with where each record lives.

`scan(path)` yields (line, byte offset, byte end, record or the JSON error) for every record, so a
bad one is reported as `FILE:LINE` (for an array: the line where the record starts) and a rank can
later read just its record with `read_record(path, offset, end)`.
"""

import json
from bisect import bisect_right
from typing import Iterator, List, Tuple, Union

from mimo_runtime.errors import UserError


class DataError(UserError):
    """`FILE:LINE: message` for a bad record (LINE 0: the file as a whole)."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.lineno, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


Record = Union[dict, str]  # a parsed record, or why it could not be parsed


def scan(path: str) -> Iterator[Tuple[int, int, int, Record]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(path, 0, f"cannot read file: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, raw.count(b"\n", 0, e.start) + 1, "not UTF-8 text") from None
    if text.lstrip()[:1] == "[":
        yield from _scan_array(path, text)
    else:
        yield from _scan_lines(text)


def _scan_lines(text: str) -> Iterator[Tuple[int, int, int, Record]]:
    offset = 0
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        size = len(line.encode("utf-8"))
        if line.strip():
            try:
                yield lineno, offset, offset + size, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, offset, offset + size, f"broken JSON: {e.msg} (column {e.colno})"
        offset += size


def _scan_array(path: str, text: str) -> Iterator[Tuple[int, int, int, Record]]:
    starts = _line_starts(text)
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    byte, byte_at = 0, 0  # byte offset of character `byte_at`, advanced as records are read

    def to_byte(p: int) -> int:
        nonlocal byte, byte_at
        byte += len(text[byte_at:p].encode("utf-8"))
        byte_at = p
        return byte

    def line_of(p: int) -> int:
        return bisect_right(starts, p)

    first = True
    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == "]":
            return
        if not first:
            if pos >= len(text) or text[pos] != ",":
                raise DataError(path, line_of(min(pos, len(text) - 1)), "broken JSON: expected ',' or ']' "
                                                                         "between records")
            pos = _skip_space(text, pos + 1)
        first = False
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            # the array's structure is lost past a broken record: nothing after it can be read
            raise DataError(path, e.lineno, f"broken JSON: {e.msg} (column {e.colno})") from None
        yield line_of(pos), to_byte(pos), to_byte(end), record
        pos = end


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_starts(text: str) -> List[int]:
    starts, at = [0], text.find("\n")
    while at != -1:
        starts.append(at + 1)
        at = text.find("\n", at + 1)
    return starts


def read_record(path: str, offset: int, end: int) -> dict:
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(end - offset).decode("utf-8"))
