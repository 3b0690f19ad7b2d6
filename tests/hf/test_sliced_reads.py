"""A TP rank reads only its slices of the HF tensors (safe_open slices), never whole tensors."""

import torch
from safetensors.torch import save_file

from mimo_runtime.hf.files import SafetensorsDir
from mimo_runtime.hf.load import _shard
from mimo_runtime.hf.names import fuse_qkv, key_index, recipe

LAYER = "language_model.decoder.layers.0."


class _Recording(SafetensorsDir):
    def __init__(self, directory):
        super().__init__(directory)
        self.rows_read = 0

    def read(self, key, dim=0, start=0, stop=-1):
        part = super().read(key, dim, start, stop)
        self.rows_read += part.numel()
        return part

    def read_full(self, key):
        raise AssertionError(f"read the whole of {key}")


def test_each_tp_rank_reads_exactly_its_share(tmp_path):
    heads, groups, d, hidden, ffn, tp = 8, 4, 4, 16, 24, 2
    t = {"model.layers.0.self_attn.q_proj.weight": torch.randn(heads * d, hidden),
         "model.layers.0.self_attn.k_proj.weight": torch.randn(groups * d, hidden),
         "model.layers.0.self_attn.v_proj.weight": torch.randn(groups * d, hidden),
         "model.layers.0.mlp.gate_proj.weight": torch.randn(ffn, hidden),
         "model.layers.0.mlp.up_proj.weight": torch.randn(ffn, hidden),
         "model.layers.0.mlp.down_proj.weight": torch.randn(hidden, ffn)}
    save_file(t, str(tmp_path / "model.safetensors"))
    fused = fuse_qkv(*(t[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"), groups)
    gate, up = t["model.layers.0.mlp.gate_proj.weight"], t["model.layers.0.mlp.up_proj.weight"]
    cases = [("self_attention.linear_qkv.weight", 0, lambda r: fused.chunk(tp)[r]),
             ("mlp.linear_fc1.weight", 0, lambda r: torch.cat([gate.chunk(tp)[r], up.chunk(tp)[r]])),
             ("mlp.linear_fc2.weight", 1, lambda r: t["model.layers.0.mlp.down_proj.weight"].chunk(tp, dim=1)[r])]
    for leaf, pdim, want in cases:
        for rank in range(tp):
            files = _Recording(str(tmp_path))
            index = key_index(files.keys())
            param = torch.nn.Parameter(torch.empty_like(want(rank)))
            got = _shard(files, index, recipe(LAYER + leaf), LAYER + leaf, param, pdim, rank, tp, heads, groups, d)
            assert torch.equal(got, want(rank)), (leaf, rank)
            assert files.rows_read == want(rank).numel(), (leaf, rank)  # 1/tp of the tensors, nothing more


class _Counting(SafetensorsDir):
    """Counts the bytes every rank's loader reads; a whole-tensor read is a failure."""

    read_bytes = 0

    def read(self, key, dim=0, start=0, stop=-1):
        part = super().read(key, dim, start, stop)
        _Counting.read_bytes += part.numel() * part.element_size()
        return part

    def read_full(self, key):
        raise AssertionError(f"read the whole of {key}")


def _rank_models(dims, grids, world: int):
    """The MimoModel of every rank of `grids`, each in this process with fake groups."""
    from mimo_runtime.model.families.build import family_config
    from mimo_runtime.model.mimo import MimoModel
    from tests.model.fakes import fake_pgs

    for rank in range(world):
        pgs, parallel = {}, {}
        for name, g in grids.items():
            tp, pp = g.shape[0], g.shape[3]
            local = rank - g.rank_offset
            tp_rank, pp_rank = (local % tp, local // tp) if 0 <= local < tp * pp else (0, 0)
            pgs[name], parallel[name] = fake_pgs((tp_rank, tp), (pp_rank, pp)), (tp, pp)
        yield MimoModel(family_config(dims, parallel, pgs, grids, rank), rank=rank)


def test_every_rank_of_an_audio_lm_reads_exactly_its_shards(tmp_path, monkeypatch):
    """Whisper tp2 (ranks 0-1) -> Llama tp2 x pp2 (ranks 2-5): each rank reads the bytes of the
    parameters it holds and nothing more (Whisper's zero k bias rows: nothing), in total less than
    the files."""
    import os

    from mimo_runtime.hf import load
    from mimo_runtime.hf.config import parts_dims
    from tests.hf import tiny
    from tests.model.fakes import fake_grid

    tiny.save_whisper(tmp_path / "whisper", 1)
    tiny.save_lm_with_token(tmp_path / "lm", "<audio>")
    monkeypatch.setattr(load, "SafetensorsDir", _Counting)
    dims = parts_dims(str(tmp_path / "lm"), audio_dir=str(tmp_path / "whisper"))
    grids = {"audio": fake_grid(0, tp=2), "language": fake_grid(2, tp=2, pp=2)}
    sources = {"audio": (str(tmp_path / "whisper"), ("audio",)), "language": (str(tmp_path / "lm"), ("lm",))}
    per_rank = []
    for rank, model in enumerate(_rank_models(dims, grids, 6)):
        _Counting.read_bytes = 0
        assert load.load_hf_weights(model, sources) > 0
        held = sum(p.numel() * 4 for n, p in model.named_parameters() if ".input_projections." not in n)
        k_zeros = dims.audio.layers * dims.audio.hidden // 2 * 4 if rank < 2 else 0
        assert _Counting.read_bytes == held - k_zeros, rank
        per_rank.append(_Counting.read_bytes)
    lm_file = os.path.getsize(tmp_path / "lm" / "model.safetensors")
    assert all(n < lm_file / 3 for n in per_rank[2:])  # a quarter of the layers' bytes, plus one end's
