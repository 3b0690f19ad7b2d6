"""mimo-runtime: heterogeneous multimodal training on megatron-core."""

__version__ = "0.1.0"
