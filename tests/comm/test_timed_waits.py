"""Which waits carry a timeout (comm/p2p.py timed_waits): gloo's only; NCCL relies on its watchdog."""

import pytest

from mimo_runtime.comm.p2p import timed_waits


@pytest.mark.parametrize("backend,device,timed", [
    ("gloo", "cpu", True),
    ("gloo", "cuda", True),  # gloo carrying CUDA tensors still answers a timed wait without blocking
    ("nccl", "cuda", False),
    ("NCCL", "cuda", False),
    ("cpu:gloo,cuda:nccl", "cuda", False),
    ("cpu:gloo,cuda:nccl", "cpu", True),
    ("cuda:nccl", "cpu", False),  # no carrier named for the device: no timed wait
    ("mpi", "cpu", False),
])
def test_only_gloo_waits_are_timed(backend, device, timed):
    assert timed_waits(backend, device) is timed


def test_a_group_transport_under_nccl_is_untimed_and_never_strict(monkeypatch):
    """The executor's lowered groups pick batching and untimed waits from the same decision."""
    import torch

    from mimo_runtime.comm import p2p_groups
    from mimo_runtime.comm.p2p import CommStats

    monkeypatch.setattr(p2p_groups, "default_backend", lambda: "cpu:gloo,cuda:nccl")
    assert p2p_groups.GroupTransport(0, CommStats(), 5.0, device=torch.device("cuda")).nccl
    assert not p2p_groups.GroupTransport(0, CommStats(), 5.0, device=torch.device("cpu")).nccl
    with pytest.raises(ValueError, match="strict"):
        p2p_groups.GroupTransport(0, CommStats(), 5.0, strict=True, device=torch.device("cuda"))
