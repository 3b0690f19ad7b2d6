"""Checks before a checkpoint is loaded, each failing with one line that names what is wrong.

Every rank runs the same checks over the whole checkpoint (not only the shards it reads), so all
ranks agree on the verdict before any of them enters DCP's collective load.
"""

import json
import math
import os
from typing import Dict, Tuple

from mimo_runtime.errors import UserError

META_FILE = "mimo.json"
SHARED_STORAGE_HINT = "on several nodes --checkpoint-dir must be storage every node shares"


class CheckpointError(UserError):
    """`DIR: message` for a checkpoint that cannot be loaded into this run."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")


def read_meta(path: str) -> Dict:
    file = os.path.join(path, META_FILE)
    if not os.path.isfile(file):
        raise CheckpointError(path, f"not a complete mimo checkpoint (no {META_FILE})")
    try:
        with open(file) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"{META_FILE} is unreadable ({e}): the checkpoint is corrupt") from None


def check_run(path: str, meta: Dict, model: str, seed: int) -> None:
    if meta.get("model") != model:
        raise CheckpointError(path, f"checkpoint is of model '{meta.get('model')}' but this run trains '{model}'")
    if meta.get("seed") != seed:
        raise CheckpointError(path, f"checkpoint was trained with seed {meta.get('seed')} but this run uses "
                                    f"seed {seed} (the data order depends on it): pass --seed {meta.get('seed')}")


def read_dcp_metadata(path: str):
    from torch.distributed.checkpoint import FileSystemReader

    if not os.path.isfile(os.path.join(path, ".metadata")):
        raise CheckpointError(path, "missing .metadata (the checkpoint index): the checkpoint is incomplete")
    try:
        return FileSystemReader(path).read_metadata()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(path, f".metadata is unreadable ({type(e).__name__}): the checkpoint is corrupt") from None


def check_files(path: str, metadata) -> None:
    """Every shard file the index names exists and is long enough for the bytes it should hold."""
    needed: Dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name in sorted(needed):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(path, f"missing shard file {name} ({_writer(name)}); {SHARED_STORAGE_HINT}")
        size = os.path.getsize(file)
        if size < needed[name]:
            raise CheckpointError(path, f"shard file {name} is truncated ({size} of {needed[name]} bytes): "
                                        f"the checkpoint is corrupt")


def _writer(name: str) -> str:
    parts = name.strip("_").split("_")
    return f"written by rank {parts[0]}" if parts and parts[0].isdigit() else "a shard file"


def check_tensors(path: str, metadata, wanted: Dict[str, Tuple[int, ...]]) -> None:
    """Every tensor this run needs is in the checkpoint, with the same global shape, fully covered."""
    saved = metadata.state_dict_metadata
    missing = sorted(k for k in wanted if k not in saved)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(path, f"checkpoint has no tensor '{missing[0]}'{more}: it was saved from "
                                    f"another model or with other frozen modules")
    for key in sorted(wanted):
        md = saved[key]
        if not hasattr(md, "chunks"):
            raise CheckpointError(path, f"'{key}' is not a tensor in the checkpoint")
        if tuple(md.size) != wanted[key]:
            raise CheckpointError(path, f"tensor '{key}' has global shape {tuple(md.size)} in the checkpoint "
                                        f"but {wanted[key]} in this model")
        covered = sum(math.prod(c.sizes) for c in md.chunks)
        if covered < math.prod(wanted[key]):
            raise CheckpointError(path, f"tensor '{key}' is only partly saved ({covered} of "
                                        f"{math.prod(wanted[key])} elements): a shard is missing")
