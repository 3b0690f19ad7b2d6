"""The model factory behind `model: {hf: DIR}` (and from_pretrained): the architecture from
`DIR/config.json`, the weights from `DIR/*.safetensors`, loaded after keyed init by `load_weights`."""

from typing import Any, Dict, List, Mapping, Tuple

from mimo_runtime.hf.config import model_dims, parts_dims
from mimo_runtime.hf.load import load_hf_weights
from mimo_runtime.model.config import MimoModelConfig
from mimo_runtime.model.families.build import family_config
from mimo_runtime.topology.hf import AUDIO_MODELS, part_architecture

HF_FACTORY = "mimo_runtime.hf.factory:hf_model"


def hf_model(args: Mapping[str, Any], ctx) -> MimoModelConfig:
    """args {dir: an HF LLaVA or *ForCausalLM directory} or {parts: {module: its own HF directory}}
    (modules.NAME.hf); ctx: model.factory.BuildContext."""
    plan = ctx.plan
    encoders = [n for n, m in plan.modules.items() if m.kind == "encoder"]
    names = {"image_module": encoders[0] if encoders else "images"}
    if "parts" in args:
        parts = args["parts"]
        kinds = {n: part_section(parts[n]) for n in encoders}
        by_kind = {kind: n for n, kind in kinds.items()}
        dims = parts_dims(parts[plan.language.name], *(parts[by_kind[k]] if k in by_kind else None
                                                       for k in ("vision", "audio")))
        names = {"image_module": by_kind.get("vision", "images"), "audio_module": by_kind.get("audio", "audio")}
    else:
        dims = model_dims(args["dir"])
    lang = plan.language
    return family_config(dims, {n: (m.tp, m.pp) for n, m in plan.modules.items()}, ctx.pgs, ctx.grid_map,
                         ctx.rank, ctx.backend, {n: ctx.recompute(n) for n in plan.modules}, lang.cp,
                         lang.sequence_parallel, **names)


def part_section(directory: str) -> str:
    """The normalized section (hf/names.py) an encoder part's tensors load into: vision or audio."""
    return "audio" if part_architecture(directory) in AUDIO_MODELS else "vision"


def load_weights(model, args: Mapping[str, Any], ctx) -> int:
    """Fill every module `model` holds from its HF directory; returns the parameters loaded."""
    return load_hf_weights(model, sources(args, ctx.plan))


def check_weights(model, args: Mapping[str, Any], plan) -> List:
    """Every tensor `model` (on `meta`) would load is in its HF directory with its shape: the
    TopologyErrors of those that are not, all of them, nothing read (`mimo-run check`)."""
    errors: List = []
    load_hf_weights(model, sources(args, plan), errors)
    return errors


def sources(args: Mapping[str, Any], plan) -> Dict[str, Tuple[str, Tuple[str, ...]]]:
    if "parts" in args:
        # each part its own section; the projector between them keeps its keyed init
        return {name: (d, ("lm",) if name == plan.language.name else (part_section(d),))
                for name, d in args["parts"].items()}
    return {name: (args["dir"], ("lm", "vision", "projector")) for name in plan.modules}
