"""Device-agnostic communication: dict-of-tensor P2P between stages, and the bridge between modules."""

from mimo_runtime.comm.bridge import Bridge
from mimo_runtime.comm.p2p import CommStats, Outbox, recv_tensors, send_tensors
from mimo_runtime.comm.routes import Route, backward_routes, forward_routes, owned

__all__ = ["Bridge", "CommStats", "Outbox", "send_tensors", "recv_tensors", "Route", "forward_routes",
           "backward_routes", "owned"]
