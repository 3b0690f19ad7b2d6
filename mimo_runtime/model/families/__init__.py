"""Model families of real checkpoints on megatron-core layers: Llama-style decoders (Llama, Mistral,
Qwen2), ViT encoders (CLIP, SigLIP) and LLaVA projectors.

`dims.py` holds what a family needs to know (plain dataclasses, filled from HF configs by
`mimo_runtime.hf.config`); `decoder.py`, `vit.py` and `projector.py` turn them into ModuleSpecs that
`MimoModel` builds like any preset's, so TP, PP, frozen encoders and checkpoints work unchanged.
"""
