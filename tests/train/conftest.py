"""The equivalence tests run under the strict p2p transport (comm/p2p_groups.py): a send completes only
when its receiver took it, so a list that would deadlock under NCCL times out here instead of passing."""

import pytest


@pytest.fixture(autouse=True)
def strict_p2p(monkeypatch):
    monkeypatch.setenv("MIMO_P2P_STRICT", "1")
