"""`model: {hf: DIR}`: the HF directory's config.json checked against the topology before anything
is built (pure: json only). The architecture must be supported, the modules must match it (LLaVA:
one image encoder; a *ForCausalLM: none), and every module's tp must divide its attention heads and
kv heads (and the vocabulary), its pp its layers. mimo_runtime/hf/config.py reads the same file
into the families' dims with the helpers here.
"""

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from mimo_runtime.errors import TopologyError

CAUSAL_LMS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
VISION_MODELS = {"CLIPVisionModel": "clip_vision_model", "SiglipVisionModel": "siglip_vision_model"}
# an audio encoder's directory: a whole Whisper (only its encoder is used) or an encoder saved alone
AUDIO_MODELS = {"WhisperForConditionalGeneration": "whisper", "WhisperModel": "whisper", "WhisperEncoder": "whisper"}
ENCODER_MODELS = {**VISION_MODELS, **AUDIO_MODELS}
LLAVA = "LlavaForConditionalGeneration"
ARCHITECTURES = (LLAVA, *CAUSAL_LMS, *VISION_MODELS, *AUDIO_MODELS)


def read_config(directory: str) -> Tuple[str, Dict[str, Any]]:
    """(path of config.json, its contents)."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise TopologyError(directory, "config.json", "no config.json in this directory (an HF model directory "
                                                      "written by save_pretrained is expected)")
    try:
        with open(path) as f:
            return path, json.load(f)
    except (OSError, ValueError) as e:
        raise TopologyError(path, "", f"cannot read it as JSON: {e}") from None


def architecture(path: str, cfg: Mapping[str, Any]) -> str:
    archs = cfg.get("architectures") or []
    if not archs:
        raise TopologyError(path, "architectures", f"missing; supported: {', '.join(ARCHITECTURES)}")
    if archs[0] not in ARCHITECTURES:
        raise TopologyError(path, "architectures", f"'{archs[0]}' is not supported; supported: "
                                                   f"{', '.join(ARCHITECTURES)}")
    return archs[0]


def feature_layers(path: str, total: int, feature_layer: Any) -> int:
    """Layers a LLaVA vision tower runs: hidden_states[k] is the output of k layers (0: the embeddings)."""
    if not isinstance(feature_layer, int) or isinstance(feature_layer, bool):
        raise TopologyError(path, "vision_feature_layer", f"must be one layer index (lists of layers are not "
                                                          f"supported), got {feature_layer!r}")
    layers = feature_layer if feature_layer >= 0 else total + 1 + feature_layer
    if not 1 <= layers <= total:
        raise TopologyError(path, "vision_feature_layer", f"{feature_layer} selects no layer of {total}")
    return layers


def check_hf_model(topo) -> None:
    """The topology's `model: {hf: DIR}` (a ModelFactory with `hf`) against the topology's modules."""
    src, model = topo.source, topo.model
    if bool(model.hf) == bool(model.factory):
        raise TopologyError(src, "model", "give either factory (your model's function) or hf (an HF model "
                                          "directory), not " + ("both" if model.hf else "neither"))
    path, cfg = read_config(model.hf)
    arch = architecture(path, cfg)
    if arch in ENCODER_MODELS:
        alone = "a vision tower" if arch in VISION_MODELS else "an audio encoder"
        raise TopologyError(src, "model.hf", f"{path} holds '{arch}', {alone} alone; model.hf needs "
                                             f"{LLAVA} or a *ForCausalLM (give encoders as modules.NAME.hf)")
    encoders = list(topo.encoders)
    want = 1 if arch == LLAVA else 0
    if len(encoders) != want:
        raise TopologyError(src, "modules", f"{path} is a {arch}: the topology needs {want} encoder module(s), "
                                            f"it has {len(encoders)} ({', '.join(encoders) or 'none'})")
    text = cfg.get("text_config", {}) if arch == LLAVA else cfg
    lang = topo.language
    heads = _int(path, text, "num_attention_heads")
    _check(src, path, lang.name, "tp", lang.parallel.tp, heads, "attention heads (num_attention_heads)")
    _check(src, path, lang.name, "tp", lang.parallel.tp, text.get("num_key_value_heads") or heads,
           "kv heads (num_key_value_heads)")
    _check(src, path, lang.name, "tp", lang.parallel.tp, _int(path, text, "vocab_size"), "vocabulary (vocab_size)")
    _check(src, path, lang.name, "pp", lang.parallel.pp, _int(path, text, "num_hidden_layers"),
           "layers (num_hidden_layers)")
    for name in encoders:
        vision, m = cfg.get("vision_config", {}), topo.modules[name]
        _check(src, path, name, "tp", m.parallel.tp, _int(path, vision, "num_attention_heads"),
               "vision attention heads (vision_config.num_attention_heads)")
        built = feature_layers(path, _int(path, vision, "num_hidden_layers"), cfg.get("vision_feature_layer", -2))
        _check(src, path, name, "pp", m.parallel.pp, built, "vision layers up to vision_feature_layer")


def _check(src: str, path: str, module: str, dim: str, size: int, count: int, what: str) -> None:
    if count % size:
        raise TopologyError(src, f"modules.{module}.parallel.{dim}", f"{size} does not divide the {count} {what} "
                                                                     f"of {path}")


def _int(path: str, c: Mapping[str, Any], key: str) -> int:
    value = c.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TopologyError(path, key, f"must be a positive integer, got {value!r}")
    return value


def check_hf_parts(topo) -> None:
    """`modules.NAME.hf`: every module from its own HF directory (a vision tower or a Whisper per
    encoder, at most one of each, a *ForCausalLM for the language model); the projectors start
    from keyed init."""
    src = topo.source
    if not isinstance(topo.model, str) or topo.model != "tiny-vlm":
        raise TopologyError(src, "model", "leave model out when modules give hf directories (the model is "
                                          "assembled from them)")
    for name, m in topo.modules.items():
        if not m.hf:
            raise TopologyError(src, f"modules.{name}.hf", "every module needs an hf directory once one has one")
        path, cfg = read_config(m.hf)
        arch = architecture(path, cfg)
        want = CAUSAL_LMS if m.kind == "language" else ENCODER_MODELS
        if arch not in want:
            raise TopologyError(src, f"modules.{name}.hf", f"{path} holds '{arch}'; a {m.kind} module needs one of "
                                                           f"{', '.join(want)}")
        if arch in AUDIO_MODELS:
            _check(src, path, name, "tp", m.parallel.tp, _int(path, cfg, "encoder_attention_heads"),
                   "audio attention heads (encoder_attention_heads)")
            _check(src, path, name, "pp", m.parallel.pp, _int(path, cfg, "encoder_layers"),
                   "audio layers (encoder_layers)")
            continue
        c = cfg.get("vision_config", cfg)
        heads = _int(path, c, "num_attention_heads")
        _check(src, path, name, "tp", m.parallel.tp, heads, "attention heads (num_attention_heads)")
        if m.kind == "language":
            _check(src, path, name, "tp", m.parallel.tp, c.get("num_key_value_heads") or heads,
                   "kv heads (num_key_value_heads)")
            _check(src, path, name, "tp", m.parallel.tp, _int(path, c, "vocab_size"), "vocabulary (vocab_size)")
            _check(src, path, name, "pp", m.parallel.pp, _int(path, c, "num_hidden_layers"), "layers (num_hidden_layers)")
        else:
            built = feature_layers(path, _int(path, c, "num_hidden_layers"), PART_FEATURE_LAYER[arch])
            _check(src, path, name, "pp", m.parallel.pp, built, "vision layers up to the feature layer")
    for kind, archs in (("vision", VISION_MODELS), ("audio", AUDIO_MODELS)):
        names = [n for n, m in topo.modules.items() if m.kind == "encoder" and part_architecture(m.hf) in archs]
        if len(names) > 1:
            raise TopologyError(src, f"modules.{names[1]}.hf", f"at most one {kind} encoder from an hf directory; "
                                                               f"{', '.join(names)} all hold one")


def part_architecture(directory: str) -> str:
    """The architecture of one part's hf directory."""
    return architecture(*read_config(directory))


# how a separately saved vision tower is read (LLaVA-1.5 for CLIP; SigLIP LLaVAs take the last layer, all rows)
PART_FEATURE_LAYER = {"CLIPVisionModel": -2, "SiglipVisionModel": -1}
PART_FEATURE_SELECT = {"CLIPVisionModel": "default", "SiglipVisionModel": "full"}


def layer_counts(topo) -> Dict[str, int]:
    """Layers each module runs, from its HF config(s): what pp (and vpp * pp) must divide."""
    out: Dict[str, int] = {}
    if any(m.hf for m in topo.modules.values()):
        for name, m in topo.modules.items():
            path, cfg = read_config(m.hf)
            c = cfg.get("vision_config", cfg)
            arch = architecture(path, cfg)
            total = _int(path, c, "num_hidden_layers")
            out[name] = total if m.kind == "language" else feature_layers(path, total, PART_FEATURE_LAYER.get(arch, -1))
        return out
    path, cfg = read_config(topo.model.hf)
    arch = architecture(path, cfg)
    text = cfg.get("text_config", {}) if arch == LLAVA else cfg
    out[topo.language.name] = _int(path, text, "num_hidden_layers")
    for name in topo.encoders:
        out[name] = feature_layers(path, _int(path, cfg.get("vision_config", {}), "num_hidden_layers"),
                                   cfg.get("vision_feature_layer", -2))
    return out


def preset_of(topo) -> Optional[str]:
    """The preset name a topology's model is; None for a factory or HF directories (modules.NAME.hf
    leave `model` at its default preset name, which then describes nothing that runs)."""
    if not isinstance(topo.model, str) or any(m.hf for m in topo.modules.values()):
        return None
    return topo.model
