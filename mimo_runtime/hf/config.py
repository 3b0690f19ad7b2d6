"""HF `config.json` -> the families' dims (pure; no torch, no transformers).

Architectures: `LlavaForConditionalGeneration` (CLIP or SigLIP vision tower + Llama/Mistral/Qwen2
text model), `LlamaForCausalLM` / `MistralForCausalLM` / `Qwen2ForCausalLM`, and the separately
saved parts `CLIPVisionModel` / `SiglipVisionModel` and Whisper (`WhisperForConditionalGeneration`,
`WhisperModel` or `WhisperEncoder`: its encoder). Every error names the file and the field.
"""

import json
import math
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from mimo_runtime.errors import TopologyError
from mimo_runtime.model.families.dims import ACTIVATIONS, DecoderDims, ProjectorDims, ViTDims, VLMDims, WhisperDims
from mimo_runtime.topology.hf import (AUDIO_MODELS, CAUSAL_LMS, ENCODER_MODELS, PART_FEATURE_LAYER,
                                     PART_FEATURE_SELECT, VISION_MODELS, architecture, feature_layers, read_config)

DECODERS = ("llama", "mistral", "qwen2")


def model_dims(directory: str) -> VLMDims:
    """The whole model a directory describes: LLaVA, or a language model alone."""
    path, cfg = read_config(directory)
    arch = architecture(path, cfg)
    if arch in ENCODER_MODELS:
        alone = "a vision tower" if arch in VISION_MODELS else "an audio encoder"
        raise TopologyError(path, "architectures", f"'{arch}' is {alone} alone; give it as "
                                                   f"modules.NAME.hf of an encoder, not as model.hf")
    if arch in CAUSAL_LMS:
        return VLMDims(language=decoder_dims(path, cfg, "", cfg.get("tie_word_embeddings", True)))
    text, vision = _section(path, cfg, "text_config"), _section(path, cfg, "vision_config")
    tied = text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
    lang = decoder_dims(path, text, "text_config.", tied)
    vit = vit_dims(path, vision, "vision_config.", cfg.get("vision_feature_layer", -2),
                   cfg.get("vision_feature_select_strategy", "default"))
    act = cfg.get("projector_hidden_act", "gelu")
    proj = ProjectorDims("mlp2x_gelu", vit.hidden, lang.hidden, act, bool(cfg.get("multimodal_projector_bias", True)))
    token = cfg.get("image_token_index", cfg.get("image_token_id"))
    if not isinstance(token, int) or not 0 <= token < lang.vocab_size:
        raise TopologyError(path, "image_token_index", f"must be a token id below vocab_size {lang.vocab_size}, "
                                                       f"got {token!r}")
    return VLMDims(language=lang, vision=vit, projector=proj, image_token_id=token)


def vision_model_dims(directory: str) -> ViTDims:
    """A separately saved vision tower (CLIPVisionModel / SiglipVisionModel), read as LLaVA reads it:
    CLIP as LLaVA-1.5 (second-to-last layer, class token dropped), SigLIP its last layer, every row."""
    path, cfg = read_config(directory)
    arch = architecture(path, cfg)
    if arch not in VISION_MODELS:
        raise TopologyError(path, "architectures", f"an encoder's hf directory must hold one of "
                                                   f"{', '.join(VISION_MODELS)}, got '{arch}'")
    return vit_dims(path, cfg.get("vision_config", cfg), "", PART_FEATURE_LAYER[arch], PART_FEATURE_SELECT[arch])


def whisper_dims(directory: str) -> WhisperDims:
    """The encoder half of a Whisper directory (WhisperForConditionalGeneration, WhisperModel or a
    WhisperEncoder saved alone: all carry a WhisperConfig)."""
    path, c = read_config(directory)
    arch = architecture(path, c)
    if arch not in AUDIO_MODELS:
        raise TopologyError(path, "architectures", f"an audio encoder's hf directory must hold one of "
                                                   f"{', '.join(AUDIO_MODELS)}, got '{arch}'")
    if c.get("model_type", "whisper") != "whisper":
        raise TopologyError(path, "model_type", f"'{c.get('model_type')}' is not whisper")
    act = c.get("activation_function", "gelu")
    if act not in ACTIVATIONS:
        raise TopologyError(path, "activation_function", f"'{act}' is not supported; supported: "
                                                         f"{', '.join(ACTIVATIONS)}")
    hidden, heads = _int(path, "", c, "d_model"), _int(path, "", c, "encoder_attention_heads")
    if hidden % heads:
        raise TopologyError(path, "encoder_attention_heads", f"{heads} does not divide d_model={hidden}")
    return WhisperDims(hidden=hidden, layers=_int(path, "", c, "encoder_layers"), heads=heads,
                       ffn_hidden=_int(path, "", c, "encoder_ffn_dim"), mels=_int(path, "", c, "num_mel_bins"),
                       positions=_int(path, "", c, "max_source_positions"), act=act)


def parts_dims(language_dir: str, vision_dir: Optional[str] = None, audio_dir: Optional[str] = None) -> VLMDims:
    """A model assembled from separately saved parts (modules.NAME.hf): a *ForCausalLM, a vision
    tower and/or a Whisper, and a LLaVA `mlp2x_gelu` projector between each encoder and the
    language model (keyed init); the placeholder tokens are the language tokenizer's `<image>`
    and `<audio>`."""
    path, cfg = read_config(language_dir)
    arch = architecture(path, cfg)
    if arch not in CAUSAL_LMS:
        raise TopologyError(path, "architectures", f"the language module's hf directory must hold one of "
                                                   f"{', '.join(CAUSAL_LMS)}, got '{arch}'")
    lang = decoder_dims(path, cfg, "", cfg.get("tie_word_embeddings", True))
    encoders = {}
    if vision_dir is not None:
        vit = vision_model_dims(vision_dir)
        encoders.update(vision=vit, projector=ProjectorDims("mlp2x_gelu", vit.hidden, lang.hidden),
                        image_token_id=image_token_id(language_dir, lang.vocab_size))
    if audio_dir is not None:
        audio = whisper_dims(audio_dir)
        encoders.update(audio=audio, audio_projector=ProjectorDims("mlp2x_gelu", audio.hidden, lang.hidden),
                        audio_token_id=image_token_id(language_dir, lang.vocab_size, AUDIO_TOKEN))
    return VLMDims(language=lang, **encoders)


IMAGE_TOKEN, AUDIO_TOKEN = "<image>", "<audio>"


def image_token_id(directory: str, vocab_size: int, token: str = IMAGE_TOKEN) -> int:
    """The id of `token` (`<image>`, `<audio>`) among the added tokens of the directory's tokenizer."""
    for name, read in (("tokenizer.json", lambda d: {t["content"]: t["id"] for t in d.get("added_tokens", [])}),
                       ("tokenizer_config.json", lambda d: {t.get("content"): int(i) for i, t in
                                                            d.get("added_tokens_decoder", {}).items()})):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path) as f:
                ids = read(json.load(f))
            if token in ids and 0 <= ids[token] < vocab_size:
                return ids[token]
    raise TopologyError(directory, "tokenizer", f"no '{token}' token below vocab_size {vocab_size} among "
                                                f"the tokenizer's added tokens (add it, resize the embeddings and "
                                                f"save the language model again)")


def decoder_dims(path: str, c: Mapping[str, Any], where: str, tied: bool) -> DecoderDims:
    kind = c.get("model_type")
    if kind not in DECODERS:
        raise TopologyError(path, f"{where}model_type", f"'{kind}' is not a supported language model; "
                                                        f"supported: {', '.join(DECODERS)}")
    _expect(path, where, c, "hidden_act", "silu")
    if c.get("mlp_bias"):
        raise TopologyError(path, f"{where}mlp_bias", "MLP biases are not supported (Llama/Mistral/Qwen2 have none)")
    if c.get("use_sliding_window"):
        raise TopologyError(path, f"{where}use_sliding_window", "sliding-window attention is not supported")
    hidden, heads = _int(path, where, c, "hidden_size"), _int(path, where, c, "num_attention_heads")
    kv = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or hidden // heads
    if heads % kv:
        raise TopologyError(path, f"{where}num_key_value_heads", f"{kv} does not divide num_attention_heads={heads}")
    return DecoderDims(
        vocab_size=_int(path, where, c, "vocab_size"), hidden=hidden, layers=_int(path, where, c, "num_hidden_layers"),
        heads=heads, kv_heads=kv, head_dim=head_dim, ffn_hidden=_int(path, where, c, "intermediate_size"),
        norm_eps=float(c.get("rms_norm_eps", 1e-6)), rope_inv_freq=rope_inv_freq(path, where, c, head_dim),
        qkv_bias=kind == "qwen2" or bool(c.get("attention_bias", False)), tied=bool(tied),
        max_positions=int(c.get("max_position_embeddings", 4096)))


def rope_inv_freq(path: str, where: str, c: Mapping[str, Any], head_dim: int) -> Tuple[float, ...]:
    """Rotary inverse frequencies from `rope_parameters` (transformers 5.x) or `rope_theta` +
    `rope_scaling` (4.x): default, linear and llama3 (Llama-3.1) scaling, as transformers computes them."""
    params: Dict[str, Any] = dict(c.get("rope_parameters") or {})
    field = f"{where}rope_parameters"
    if not params:
        params = dict(c.get("rope_scaling") or {})
        params.setdefault("rope_theta", c.get("rope_theta", 10000.0))
        field = f"{where}rope_scaling"
    kind = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", c.get("rope_theta", 10000.0)))
    base = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    if kind == "default":
        return tuple(base)
    if kind == "linear":
        return tuple(f / float(params["factor"]) for f in base)
    if kind == "llama3":
        return tuple(_llama3(base, params, path, field))
    raise TopologyError(path, field, f"rope_type '{kind}' is not supported; supported: default, linear, llama3")


def _llama3(base, params: Mapping[str, Any], path: str, field: str):
    try:
        factor, low, high = (float(params[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
        old = float(params["original_max_position_embeddings"])
    except KeyError as e:
        raise TopologyError(path, field, f"llama3 rope scaling needs {e.args[0]}") from None
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in base:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(f)
        elif wavelen > low_wavelen:
            out.append(f / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return out


def vit_dims(path: str, c: Mapping[str, Any], where: str, feature_layer: Any, strategy: str) -> ViTDims:
    kind = c.get("model_type")
    if kind not in ("clip_vision_model", "siglip_vision_model"):
        raise TopologyError(path, f"{where}model_type", f"'{kind}' is not a supported vision tower; supported: "
                                                        f"clip_vision_model, siglip_vision_model")
    clip = kind == "clip_vision_model"
    total = _int(path, where, c, "num_hidden_layers")
    layers = feature_layers(path, total, feature_layer)
    if strategy not in ("default", "full"):
        raise TopologyError(path, "vision_feature_select_strategy", f"must be default or full, got '{strategy}'")
    hidden, heads = _int(path, where, c, "hidden_size"), _int(path, where, c, "num_attention_heads")
    image, patch = _int(path, where, c, "image_size"), _int(path, where, c, "patch_size")
    if image % patch:
        raise TopologyError(path, f"{where}patch_size", f"{patch} does not divide image_size={image}")
    return ViTDims(family="clip" if clip else "siglip", hidden=hidden, layers=layers, heads=heads,
                   ffn_hidden=_int(path, where, c, "intermediate_size"), image_size=image, patch=patch,
                   channels=int(c.get("num_channels", 3)), norm_eps=float(c.get("layer_norm_eps", 1e-5 if clip else 1e-6)),
                   act=c.get("hidden_act", "quick_gelu" if clip else "gelu_pytorch_tanh"), class_token=clip,
                   pre_norm=clip, drop_class=strategy == "default", total_layers=total)


def _section(path: str, cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = cfg.get(key)
    if not isinstance(section, Mapping):
        raise TopologyError(path, key, "missing (a LLaVA config has text_config and vision_config)")
    return section


def _int(path: str, where: str, c: Mapping[str, Any], key: str) -> int:
    value = c.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TopologyError(path, f"{where}{key}", f"must be a positive integer, got {value!r}")
    return value


def _expect(path: str, where: str, c: Mapping[str, Any], key: str, want: Optional[str]) -> None:
    if c.get(key, want) != want:
        raise TopologyError(path, f"{where}{key}", f"'{c.get(key)}' is not supported; expected '{want}'")
