"""Training from HF weights: a heterogeneous topology (images dp2 -> language tp2 x pp2, so tp2, pp2 and
encoder dp2 -> language tp2 in one spawn) gives the colocated single-process run's losses and gradients."""

import dataclasses
import functools

import torch

from mimo_runtime.topology import topology_from_dict
from tests.hf import tiny
from tests.train import equivalence

HETERO = {"images": {"kind": "encoder", "parallel": {"dp": 2}},
          "language": {"kind": "language", "parallel": {"tp": 2, "pp": 2}}}
COLOCATED = {"images": {"kind": "encoder"}, "language": {"kind": "language"}}
GATED = "mlp.linear_fc1.weight"


def _topology(directory, modules):
    return topology_from_dict({"model": {"hf": str(directory)},
                               "data": {"factory": "tests.hf.hf_data:build_data", "args": {"seq": 48}},
                               "modules": modules, "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}},
                              source="<hf>")


@functools.lru_cache(maxsize=None)
def _runs(directory):
    tiny.llava_clip_llama(directory)
    ref = equivalence.run(_topology(directory, COLOCATED), colocated=True, nproc=1, steps=2)[0]
    topo = _topology(directory, HETERO)
    return topo, equivalence.run(topo, steps=2), ref


def _gated_as_tp_chunks(ref, tp: int):
    """The reference with each SwiGLU fc1 gradient reordered so that its contiguous TP chunk r is
    TP rank r's shard ([gate_r; up_r], megatron's gated layout) - what the harness compares."""
    grads = {}
    for name, (grad, *rest) in ref.grads.items():
        if name.startswith("language_model.") and name.endswith(GATED) and grad is not None:
            gate, up = grad.chunk(2)
            grad = torch.cat([torch.cat([g, u]) for g, u in zip(gate.chunk(tp), up.chunk(tp))])
        grads[name] = (grad, *rest)
    return dataclasses.replace(ref, grads=grads)


def test_heterogeneous_run_from_hf_weights_equals_colocated(tmp_path_factory):
    topo, results, ref = _runs(str(tmp_path_factory.getbasetemp() / "llava_clip_llama"))
    equivalence.assert_matches_reference(topo, results, _gated_as_tp_chunks(ref, 2))
