"""An audio LM from HF parts (Whisper + Llama) trained on a heterogeneous topology (audio tp2 ->
language tp2 with sequence parallelism, RMSNorm on the portable backend) gives the colocated
single-process run's losses and gradients. One 4-rank launch and one 1-rank reference."""

import functools

from tests.hf import tiny
from tests.hf.test_training import _gated_as_tp_chunks
from tests.train import equivalence

HETERO = {"audio": {"kind": "encoder", "parallel": {"tp": 2}},
          "language": {"kind": "language", "parallel": {"tp": 2}, "sequence_parallel": True}}
COLOCATED = {"audio": {"kind": "encoder"}, "language": {"kind": "language"}}


def _topology(root, modules):
    name = "_".join(str(m.get("parallel", {}).get("tp", 1)) for m in modules.values())
    return tiny.audio_lm_topology(root, name, modules)


@functools.lru_cache(maxsize=None)
def _runs(root):
    tiny.save_audio_lm_parts(root)
    ref = equivalence.run(_topology(root, COLOCATED), colocated=True, nproc=1, steps=2)[0]
    topo = _topology(root, HETERO)
    return topo, equivalence.run(topo, steps=2), ref


def test_audio_lm_from_hf_parts_tp2_sp_equals_colocated(tmp_path_factory):
    topo, results, ref = _runs(tmp_path_factory.getbasetemp() / "whisper_llama")
    assert any(name.startswith("modality_submodules.audio.encoders.audio_tower.") and grad is not None
               for name, (grad, *_rest) in ref.grads.items())
    equivalence.assert_matches_reference(topo, results, _gated_as_tp_chunks(ref, 2))
