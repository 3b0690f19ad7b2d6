"""These equivalence tests (the colocated exchange among them) run under the strict p2p transport
(comm/p2p_groups.py), as tests/train's do: a list that would deadlock under NCCL times out here."""

import pytest


@pytest.fixture(autouse=True)
def strict_p2p(monkeypatch):
    monkeypatch.setenv("MIMO_P2P_STRICT", "1")
