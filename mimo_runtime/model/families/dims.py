"""What each family needs to be built: plain frozen dataclasses, no torch."""

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class DecoderDims:
    """A Llama-style decoder: RMSNorm, SwiGLU, grouped-query attention, rotary positions.

    rope_inv_freq: the rotary inverse frequencies (head_dim / 2 values), already scaled
    (llama3 and the like are applied when the HF config is read), so the model never needs to
    know the scaling scheme.
    """

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_hidden: int
    norm_eps: float
    rope_inv_freq: Tuple[float, ...]
    qkv_bias: bool = False
    tied: bool = False
    max_positions: int = 4096


# activations by HF `hidden_act` name
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_pytorch_tanh", "silu")


@dataclass(frozen=True)
class ViTDims:
    """A ViT: conv patch embedding, learned positions, pre-norm transformer layers.

    class_token / pre_norm: CLIP's class embedding and `pre_layrnorm` (SigLIP has neither).
    layers: the layers that are built and run (LLaVA reads hidden states of layer
    `vision_feature_layer`, so later layers are never computed); total_layers: what the checkpoint holds.
    drop_class: LLaVA's `default` feature selection drops the first row of every image.
    """

    family: str  # "clip" or "siglip"
    hidden: int
    layers: int
    heads: int
    ffn_hidden: int
    image_size: int
    patch: int
    channels: int
    norm_eps: float
    act: str
    class_token: bool
    pre_norm: bool
    drop_class: bool
    total_layers: int

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch) ** 2

    @property
    def seq_tokens(self) -> int:
        """Rows per image inside the encoder (patches, plus the class token)."""
        return self.patches + int(self.class_token)

    @property
    def tokens_per_item(self) -> int:
        """Rows per image handed to the language model."""
        return self.seq_tokens - int(self.drop_class)


@dataclass(frozen=True)
class ProjectorDims:
    """LLaVA's projector: `mlp2x_gelu` (linear, act, linear) or `linear` (one affine map)."""

    kind: str  # "mlp2x_gelu" or "linear"
    input_size: int
    hidden: int
    act: str = "gelu"
    bias: bool = True


@dataclass(frozen=True)
class WhisperDims:
    """Whisper's audio encoder: conv1 (k3 s1) + GELU, conv2 (k3 s2) + GELU, fixed sinusoidal
    positions, pre-LN layers with a GELU MLP, a final LayerNorm.

    Whisper takes exactly `frames` = 2 * positions mel frames per clip (30 s, padded), and conv2
    halves them: every clip gives `positions` rows.
    """

    hidden: int
    layers: int
    heads: int
    ffn_hidden: int
    mels: int
    positions: int  # max_source_positions
    act: str = "gelu"
    norm_eps: float = 1e-5

    @property
    def frames(self) -> int:
        return 2 * self.positions

    @property
    def tokens_per_item(self) -> int:
        """Rows per clip handed to the language model (frames / 2)."""
        return self.positions


@dataclass(frozen=True)
class VLMDims:
    """A whole model: the language decoder and, for a VLM, one image encoder and its projector;
    an audio LM (modules.NAME.hf parts) has a Whisper encoder and its projector instead or besides."""

    language: DecoderDims
    vision: Optional[ViTDims] = None
    projector: Optional[ProjectorDims] = None
    image_token_id: Optional[int] = None
    audio: Optional[WhisperDims] = None
    audio_projector: Optional[ProjectorDims] = None
    audio_token_id: Optional[int] = None
