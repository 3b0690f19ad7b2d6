"""What the ported upstream tests swap for CPU, nothing else: a portable layer spec for
`get_gpt_layer_with_transformer_engine_spec` (no transformer-engine here), torch norms for
CLIPViTModel's TE-default ln_pre/ln_post, and tiny HF configs for the Hub-sized defaults."""

from megatron.core.transformer.torch_norm import WrappedTorchNorm

from mimo_runtime.model.specs import layer_spec

CLIP_NORMS = {"ln_pre_impl": WrappedTorchNorm, "ln_post_impl": WrappedTorchNorm}


def get_gpt_layer_spec():
    """Stands in for upstream's get_gpt_layer_with_transformer_engine_spec() (causal attention)."""
    return layer_spec(causal=True, backend="portable")


def tiny_whisper_config(**overrides):
    from transformers import WhisperConfig

    kw = dict(d_model=384, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500)
    kw.update(overrides)
    return WhisperConfig(**kw)
