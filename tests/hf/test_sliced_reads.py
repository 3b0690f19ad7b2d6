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
