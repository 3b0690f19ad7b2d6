"""Tiny random HF models built from configs and saved with save_pretrained (nothing downloaded).

Three architectures the acceptance criteria name: LLaVA (CLIP + Llama, GQA, untied), LLaVA (SigLIP +
Qwen2, tied, qkv bias) and a Llama LM; dimensions small enough for a 2-core machine, with kv heads
and heads that tp=2 divides.
"""

import torch

IMAGE_TOKEN = 99
VOCAB = 100


def llama_text(**kw):
    from transformers import LlamaConfig

    args = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=256)
    args.update(kw)
    return LlamaConfig(**args)


def qwen2_text(**kw):
    from transformers import Qwen2Config

    args = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=256)
    args.update(kw)
    return Qwen2Config(**args)


def clip_vision(**kw):
    from transformers import CLIPVisionConfig

    args = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=16,
                patch_size=4, projection_dim=16)
    args.update(kw)
    return CLIPVisionConfig(**args)


def siglip_vision(**kw):
    from transformers import SiglipVisionConfig

    args = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                patch_size=4)
    args.update(kw)
    return SiglipVisionConfig(**args)


def randomize(model, seed: int):
    """Every parameter random (HF zero-inits biases and sets norms to one: too easy a parity check)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def save_llava(path, vision, text, seed: int = 0, **kw):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN, **kw)
    model = randomize(LlavaForConditionalGeneration(config), seed).eval()
    if text.tie_word_embeddings:
        model.tie_weights()
    model.save_pretrained(path)
    return model


def save_llama(path, seed: int = 0, **kw):
    from transformers import LlamaForCausalLM

    model = randomize(LlamaForCausalLM(llama_text(**kw)), seed).eval()
    model.save_pretrained(path)
    return model


def llava_clip_llama(path, seed: int = 0):
    return save_llava(path, clip_vision(), llama_text(), seed, vision_feature_layer=-2,
                      vision_feature_select_strategy="default")


def llava_siglip_qwen2(path, seed: int = 0):
    return save_llava(path, siglip_vision(), qwen2_text(), seed, vision_feature_layer=-1,
                      vision_feature_select_strategy="full", tie_word_embeddings=True)


def image_batch(config, images: int, seq: int, seed: int = 0):
    """(input_ids (1, seq) with one image's tokens per image, position_ids, pixel_values)."""
    from mimo_runtime.hf.config import vit_dims

    g = torch.Generator().manual_seed(seed)
    v = config.vision_config
    dims = vit_dims("cfg", v.to_dict(), "", config.vision_feature_layer, config.vision_feature_select_strategy)
    n = dims.tokens_per_item
    text = torch.randint(0, IMAGE_TOKEN - 1, (seq - images * n,), generator=g)
    ids = torch.cat([text[:2], torch.full((images * n,), IMAGE_TOKEN), text[2:]]).unsqueeze(0)
    px = torch.randn(images, v.num_channels, v.image_size, v.image_size, generator=g)
    return ids, torch.arange(seq).unsqueeze(0), px


AUDIO_TOKEN = IMAGE_TOKEN  # a Llama saved as an audio LM's part has `<audio>` as its last added token


def whisper_config(**kw):
    """A tiny Whisper: 8 mel bins, 16 frames per clip (8 encoder positions), heads tp=2 divides."""
    from transformers import WhisperConfig

    args = dict(vocab_size=60, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, num_mel_bins=8,
                max_source_positions=8, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                decoder_start_token_id=1)
    args.update(kw)
    return WhisperConfig(**args)


def save_whisper(path, seed: int = 0, cls: str = "WhisperForConditionalGeneration", **kw):
    """A random Whisper (every parameter random except the fixed sinusoidal positions, which HF
    never trains) saved with save_pretrained; returns the model."""
    from transformers.models.whisper import modeling_whisper

    model = getattr(modeling_whisper, cls)(whisper_config(**kw)).eval()
    encoder = model if cls == "WhisperEncoder" else model.get_encoder()
    positions = encoder.embed_positions.weight.detach().clone()
    randomize(model, seed)
    with torch.no_grad():
        encoder.embed_positions.weight.copy_(positions)
    model.save_pretrained(path)
    return model


def save_lm_with_token(path, token: str, seed: int = 2):
    """A Llama part whose tokenizer has `token` (`<image>`, `<audio>`) as added id 99."""
    from tokenizers import AddedToken, Tokenizer, models
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    lm = randomize(LlamaForCausalLM(llama_text()), seed).eval()
    lm.save_pretrained(path)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {f"t{i}": i for i in range(IMAGE_TOKEN)}, unk_token="t0")))
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(token, special=True)]})
    tok.save_pretrained(path)
    return lm


def save_audio_lm_parts(root) -> None:
    """`root/whisper` and `root/lm` (a Llama with an `<audio>` token): the parts of an audio LM."""
    save_whisper(root / "whisper", 1)
    save_lm_with_token(root / "lm", "<audio>")


def audio_lm_topology(root, name: str, modules, **train):
    """A topology of `save_audio_lm_parts`' parts: `modules` {audio|language: keys besides `hf`}, the
    audio-serving test data, `train` over global batch 8, micro batch 2, lr 1e-3; written to root/NAME.yaml."""
    import json

    from mimo_runtime.topology import load_topology

    raw = {"modules": {n: {**m, "hf": str(root / ("whisper" if n == "audio" else "lm"))} for n, m in modules.items()},
           "data": {"factory": "tests.hf.hf_data:build_data", "args": {"seq": 32, "audio": True}},
           "train": {"global_batch": 8, "micro_batch": 2, "lr": 1e-3, **train}}
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(raw))
    return load_topology(str(path))
