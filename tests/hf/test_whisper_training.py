"""An audio LM from HF parts (Whisper + Llama) trained on a heterogeneous topology (audio tp2 ->
language tp2 with sequence parallelism, RMSNorm on the portable backend) gives the colocated
single-process run's losses and gradients. One 4-rank launch and one 1-rank reference."""

import functools
import json

from mimo_runtime.topology import load_topology
from tests.hf import tiny
from tests.hf.test_training import _gated_as_tp_chunks
from tests.train import equivalence

HETERO = {"audio": {"kind": "encoder", "parallel": {"tp": 2}},
          "language": {"kind": "language", "parallel": {"tp": 2}, "sequence_parallel": True}}
COLOCATED = {"audio": {"kind": "encoder"}, "language": {"kind": "language"}}


def _topology(root, modules):
    raw = {"modules": {name: {**m, "hf": str(root / ("whisper" if name == "audio" else "lm"))}
                       for name, m in modules.items()},
           "data": {"factory": "tests.hf.hf_data:build_data", "args": {"seq": 32, "audio": True}},
           "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3}}
    path = root / f"{'_'.join(str(m.get('parallel', {}).get('tp', 1)) for m in modules.values())}.yaml"
    path.write_text(json.dumps(raw))
    return load_topology(str(path))


@functools.lru_cache(maxsize=None)
def _runs(root):
    tiny.save_whisper(root / "whisper", 1)
    tiny.save_lm_with_token(root / "lm", "<audio>")
    ref = equivalence.run(_topology(root, COLOCATED), colocated=True, nproc=1, steps=2)[0]
    topo = _topology(root, HETERO)
    return topo, equivalence.run(topo, steps=2), ref


def test_audio_lm_from_hf_parts_tp2_sp_equals_colocated(tmp_path_factory):
    topo, results, ref = _runs(tmp_path_factory.getbasetemp() / "whisper_llama")
    assert any(name.startswith("modality_submodules.audio.encoders.audio_tower.") and grad is not None
               for name, (grad, *_rest) in ref.grads.items())
    equivalence.assert_matches_reference(topo, results, _gated_as_tp_chunks(ref, 2))
