"""Device-agnostic communication: dict-of-tensor P2P between stages, and the bridge between modules.

Names load on first use, so the pure parts (routes.py, lowering.py) import without torch.
"""

import importlib

_WHERE = {"Bridge": "bridge", "CommStats": "p2p", "Outbox": "p2p", "send_tensors": "p2p", "recv_tensors": "p2p",
          "Route": "routes", "forward_routes": "routes", "backward_routes": "routes", "owned": "routes"}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mimo_runtime.comm.{_WHERE[name]}"), name)
    if name == "shm":
        return importlib.import_module("mimo_runtime.comm.shm")
    raise AttributeError(f"module 'mimo_runtime.comm' has no attribute {name!r}")
