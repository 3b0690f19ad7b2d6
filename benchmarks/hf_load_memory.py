"""Peak memory per rank while loading HF weights: a generated Llama checkpoint (~200 MB fp32) loaded
as `model: {hf: DIR}` on real gloo ranks at tp2, pp2 and tp2 x pp2.

Each rank records its resident set (RSS) after imports, after building its (uninitialized) shard of
the model and after keyed init, its RSS high-water mark while loading (reset just before), the bytes
it read from the file and the bytes of its parameters.
Prints JSON. Run: .venv/bin/python benchmarks/hf_load_memory.py [DIR]
"""

import json
import os
import sys
import tempfile

MB = 1e6
LLAMA = dict(vocab_size=16000, hidden_size=768, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=12,
             num_key_value_heads=4, tie_word_embeddings=False, max_position_embeddings=256)
SHAPES = {"tp2": (2, 1), "pp2": (1, 2), "tp2_pp2": (2, 2)}


def _rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak() -> float:
    """This process's RSS high-water mark (VmHWM: unlike ru_maxrss not inherited from the parent)."""
    return _status("VmHWM")


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1e3 / MB


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def write_checkpoint(directory: str) -> float:
    """A random Llama saved with save_pretrained; returns the safetensors bytes in MB."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if not os.path.isfile(os.path.join(directory, "model.safetensors")):
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**LLAMA)).save_pretrained(directory)
    return os.path.getsize(os.path.join(directory, "model.safetensors")) / MB


def _rank(rank: int, world: int, directory: str, tp: int, pp: int):
    import torch

    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.hf import load
    from mimo_runtime.hf.files import SafetensorsDir
    from mimo_runtime.model.factory import BuildContext, model_config
    from mimo_runtime.model.init import init_parameters
    from mimo_runtime.model.mimo import MimoModel
    from mimo_runtime.plan import make_plan
    from mimo_runtime.topology import topology_from_dict

    read = {"bytes": 0}

    class Counting(SafetensorsDir):
        def read(self, key, dim=0, start=0, stop=-1):
            part = super().read(key, dim, start, stop)
            read["bytes"] += part.numel() * part.element_size()
            return part

    load.SafetensorsDir = Counting
    topo = topology_from_dict({"model": {"hf": directory}, "placement": "colocated",
                               "modules": {"language": {"kind": "language", "parallel": {"tp": tp, "pp": pp}}}},
                              source="<bench>")
    plan = make_plan(topo)
    groups = build_module_groups(plan, 120)
    out = {"imports_mb": _rss()}
    ctx = BuildContext(plan, rank, 0, {n: g.pgs for n, g in groups.items()}, {n: g.grid for n, g in groups.items()})
    model = MimoModel(model_config(ctx), rank=rank)
    out["built_mb"] = _rss()
    init_parameters(model, 0)
    out["initialized_mb"], out["peak_before_load_mb"] = _rss(), _peak()
    _reset_peak()
    anon, mapped = _status("RssAnon"), _status("RssFile")
    load.load_hf_weights(model, {"language": (directory, ("lm", "vision", "projector"))})
    out["loaded_mb"], out["peak_while_loading_mb"] = _rss(), _peak()
    # what loading added: anonymous memory (copies) and pages of the memory-mapped file still mapped
    out["anon_added_mb"], out["file_pages_added_mb"] = _status("RssAnon") - anon, _status("RssFile") - mapped
    out["read_mb"] = read["bytes"] / MB
    out["shard_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    del torch
    return out


def main(directory: str) -> dict:
    from mimo_runtime.launch.spawn import spawn

    result = {"file_mb": round(write_checkpoint(directory), 1)}
    for name, (tp, pp) in SHAPES.items():
        ranks = spawn(_rank, tp * pp, (directory, tp, pp), timeout_s=600)
        result[name] = [{k: round(v, 1) for k, v in r.items()} for r in ranks]
    return result


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else tmp), indent=1))
