"""An audio LM from HF parts (Whisper + Llama) keeps the runtime's other features: a checkpoint
resumes bit-exact, a frozen Whisper tower gets no gradients while its projection trains, and full
recompute gives the same losses. Colocated on one rank; the heterogeneous equivalence is in
test_whisper_training.py."""

import functools

from tests.hf import tiny
from tests.train import equivalence

TOWER = "modality_submodules.audio.encoders.audio_tower."


def _topology(root, name, audio=None, language=None):
    return tiny.audio_lm_topology(root, name, {"audio": {"kind": "encoder", **(audio or {})},
                                               "language": {"kind": "language", **(language or {})}},
                                  global_batch=4)


@functools.lru_cache(maxsize=None)
def _parts(root):
    tiny.save_audio_lm_parts(root)
    return root


def _losses(results):
    return [m["loss"] for m in results[0].metrics]


def test_whisper_audio_lm_checkpoint_resumes_bit_exact(tmp_path_factory):
    root = _parts(tmp_path_factory.getbasetemp() / "whisper_ckpt")
    topo = _topology(root, "plain")
    whole = equivalence.run(topo, colocated=True, nproc=1, steps=4)
    ckpt = str(root / "ckpt")
    first = equivalence.run(topo, colocated=True, nproc=1, steps=2, checkpoint_dir=ckpt)
    rest = equivalence.run(topo, colocated=True, nproc=1, steps=4, checkpoint_dir=ckpt, resume=True)
    assert rest[0].start_step == 2
    assert _losses(first) + _losses(rest) == _losses(whole)


def test_frozen_whisper_trains_only_its_projection_and_recompute_keeps_the_losses(tmp_path_factory):
    root = _parts(tmp_path_factory.getbasetemp() / "whisper_ckpt")
    frozen = equivalence.run(_topology(root, "frozen", audio={"frozen": True}), colocated=True, nproc=1,
                             steps=2)[0]
    tower = {n: g for n, (g, *_rest) in frozen.grads.items() if n.startswith(TOWER)}
    assert tower and all(g is None for g in tower.values()), "a frozen Whisper tower gets no gradients"
    projection = {n: g for n, (g, *_rest) in frozen.grads.items()
                  if n.startswith("modality_submodules.audio.") and not n.startswith(TOWER)}
    assert projection and all(g is not None for g in projection.values()), "its projection still trains"

    plain = equivalence.run(_topology(root, "plain"), colocated=True, nproc=1, steps=2)
    recomputed = equivalence.run(_topology(root, "recompute", audio={"recompute": "full"},
                                           language={"recompute": "full"}), colocated=True, nproc=1, steps=2)
    assert _losses(recomputed) == _losses(plain)
