"""In-process hf tests run in a 1-rank gloo world with parallel_state and CUDA forbidden (the
tests/model fixture, imported so pytest registers it here too)."""

from tests.model.conftest import one_rank_world  # noqa: F401
