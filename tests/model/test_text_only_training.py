"""A global batch without a single image trains on a heterogeneous topology exactly like the
colocated single-process run (losses and every gradient)."""

import time

import torch

from mimo_runtime.topology import topology_from_dict
from tests.train.equivalence import assert_matches_reference, run


def test_text_only_global_batch_on_encoder_and_llm_ranks_matches_colocated():
    topo = topology_from_dict({
        "model": "tiny-vlm",
        "modules": {"images": {"kind": "encoder", "ranks": 1, "parallel": {"dp": 1}},
                    "language": {"kind": "language", "ranks": 2, "parallel": {"tp": 2}}},
        "data": {"factory": "tests.model.text_only_data:build", "args": {"preset": "tiny-vlm", "size": 64}},
        "train": {"global_batch": 4, "micro_batch": 2, "lr": 1e-3}}, source="<test>")
    t0 = time.monotonic()
    results = run(topo, steps=2)
    ref = run(topo, colocated=True, nproc=1, steps=2)[0]
    print(f"text-only heterogeneous + reference: {time.monotonic() - t0:.1f}s")
    assert_matches_reference(topo, results, ref)
    # the encoder saw only empty batches: its weights got exactly zero gradient on every rank
    enc = {n: g for res in results for n, (g, *_rest) in res.grads.items() if "modality_submodules" in n}
    assert enc and all(g is None or torch.count_nonzero(g) == 0 for g in enc.values())
