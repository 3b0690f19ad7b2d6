"""The user's code of user_code.py as a module outside the package, and runs of it shared by tests.

`user_module_dir()` copies user_code.py to a temporary directory as `acme_mimo.py` and puts it on
PYTHONPATH (the spawned ranks inherit it) and sys.path (this process). `reference()` is the
colocated single-process run of the user's model and data, computed once per test session.
"""

import functools
import os
import shutil
import sys
import tempfile
from typing import Dict

from mimo_runtime.topology import Topology, topology_from_dict
from tests.train import equivalence

MODULE = "acme_mimo"
MODEL_ARGS = {"hidden": 32, "heads": 2, "layers": 2, "encoder_hidden": 16}


@functools.lru_cache(maxsize=None)
def user_module_dir() -> str:
    where = tempfile.mkdtemp(prefix="mimo-user-code-")
    shutil.copy(os.path.join(os.path.dirname(__file__), "user_code.py"), os.path.join(where, f"{MODULE}.py"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, where)
    return where


def user_topology(modules: Dict, log_dir: str = "", workers: int = 0, **model) -> Topology:
    user_module_dir()
    raw = {"name": "acme", "model": {"factory": f"{MODULE}:build_model", "args": dict(MODEL_ARGS, **model)},
           "data": {"factory": f"{MODULE}:build_data", "args": {"size": 256, "log_dir": log_dir},
                    "workers": workers},
           "modules": modules, "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}}
    return topology_from_dict(raw, source="<acme>")


# images (dp 1, rank 0) fans out to language (dp 2, ranks 1-2): encoder rows are split by sample,
# so the model's tokens_per_item decides which language replica gets which rows
HETERO = {"images": {"kind": "encoder", "ranks": 1}, "language": {"kind": "language", "ranks": 2}}


@functools.lru_cache(maxsize=None)
def reference():
    """The same model and data colocated on one rank: the exact reference (RankResult)."""
    return equivalence.run(user_topology(HETERO), colocated=True, nproc=1)[0]
