"""Rank functions the precision tests spawn (module level, so `spawn` can import them)."""


def train_each(rank: int, world_size: int, cases):
    """Train every (topology, transport) of `cases` in turn in this one world: per case what the
    equivalence harness compares (metrics, captured gradients, comm stats)."""
    import os

    from mimo_runtime.train.loop import RunConfig, train_rank
    from tests.train.equivalence import SEED, STEPS

    out = []
    for topo, transport in cases:
        os.environ["MIMO_P2P_TRANSPORT"] = transport
        cfg = RunConfig(steps=STEPS, seed=SEED, nproc=world_size, timeout_s=30, progress=False, capture_grads_step=0)
        out.append(train_rank(rank, world_size, topo, cfg))
    return out
