"""Single-process tests in a 1-rank gloo world, with parallel_state and CUDA forbidden: the same
autouse fixture as tests/model (imported, so pytest registers it here too)."""

from tests.model.conftest import one_rank_world  # noqa: F401
