"""A one-process MimoModel back into an HF directory that transformers loads.

Every parameter is written under the source directory's own key names, in the source's dtype
(qkv split back into q, k, v; SwiGLU fc1 into gate and up). Tensors the model never computes
(SigLIP's `head.*`, CLIP's `post_layernorm`, layers past `vision_feature_layer`) are copied
from the source unchanged, and so are config.json, tokenizer and processor files. Without
training the export therefore reproduces the source tensors bit for bit.
"""

import os
import shutil
from typing import Dict, List, Mapping, Sequence

import torch

from mimo_runtime.hf.files import INDEX, SafetensorsDir
from mimo_runtime.hf.load import attention_dims
from mimo_runtime.hf.names import PROJECTOR_LAYERS, export_tensors, key_index
from mimo_runtime.model.init import _module_of, global_parameters

WEIGHTS = "model.safetensors"


def model_tensors(model) -> Dict[str, torch.Tensor]:
    """{normalized HF name: tensor} of a model whose every module is whole on this process."""
    out = {}
    for name, (param, _, _, tp) in global_parameters(model).items():
        if tp != 1:
            raise ValueError(f"{name}: export needs the whole model on one process (tp=1), got tp={tp}")
        module = _module_of(name)
        out.update(export_tensors(name, param.detach(), *attention_dims(model, module)))
    return out


@torch.no_grad()
def export_dir(model, source: str, out: str, sections: Sequence[str] = ("lm", "vision", "projector")) -> List[str]:
    """Write `model` (its tensors of `sections`) as an HF directory `out` shaped like `source`;
    returns the tensor keys written."""
    files = SafetensorsDir(source)
    index = key_index(files.keys(), sections[0] if len(sections) == 1 else None)
    ours = {n: t for n, t in model_tensors(model).items() if n.split(".", 1)[0] in sections}
    if "lm.lm_head.weight" in index and "lm.lm_head.weight" not in ours and "lm.embed_tokens.weight" in ours:
        ours["lm.lm_head.weight"] = ours["lm.embed_tokens.weight"]  # tied: the source stored the copy too
    unknown = sorted(set(ours) - set(index))
    if unknown:
        raise ValueError(f"{source} has no tensor for {unknown[0]}; export writes the source's layout")
    written = {index[n]: t.to(files.dtype(index[n])).clone().contiguous() for n, t in ours.items()}
    for key in files.keys():
        if key not in written:  # never computed: carried through unchanged
            written[key] = files.read_full(key)
    os.makedirs(out, exist_ok=True)
    from safetensors.torch import save_file

    save_file(written, os.path.join(out, WEIGHTS), metadata={"format": "pt"})
    for entry in os.listdir(source):
        path = os.path.join(source, entry)
        if os.path.isfile(path) and not entry.endswith(".safetensors") and entry != INDEX:
            shutil.copy2(path, os.path.join(out, entry))
    return sorted(written)


@torch.no_grad()
def export_parts(model, parts: Mapping[str, str], language: str, out: str) -> List[str]:
    """modules.NAME.hf: each part as its own directory `out/NAME` shaped like its source (a Whisper
    part's decoder carried through untouched), and each encoder's projector (which no source
    holds) as `out/NAME_projector.safetensors` under LLaVA's `multi_modal_projector.*` names."""
    from safetensors.torch import save_file

    from mimo_runtime.hf.factory import part_section

    written = []
    for name, source in parts.items():
        section = "lm" if name == language else part_section(source)
        written += export_dir(model, source, os.path.join(out, name), (section,))
    for name in parts:
        projector = projector_tensors(model, name)
        if name != language and projector:
            save_file(projector, os.path.join(out, f"{name}_projector.safetensors"), metadata={"format": "pt"})
            written += sorted(projector)
    return written


def projector_tensors(model, module: str) -> Dict[str, torch.Tensor]:
    """{multi_modal_projector.* name: tensor} of one encoder module's projector."""
    prefix = f"modality_submodules.{module}.input_projections.0.encoder."
    out = {}
    for name, (param, *_rest) in global_parameters(model).items():
        layer, _, leaf = name[len(prefix):].partition(".")
        if name.startswith(prefix) and layer in PROJECTOR_LAYERS:
            out[f"multi_modal_projector.{PROJECTOR_LAYERS[layer]}.{leaf}"] = param.detach().clone().contiguous()
    return out
