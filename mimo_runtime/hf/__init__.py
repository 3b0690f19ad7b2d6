"""HuggingFace checkpoints in and out: config.json -> family dims (config.py), HF tensor names and
layouts <-> megatron parameters (names.py), per-rank sliced loading (files.py, load.py),
`from_pretrained` (pretrained.py) and export (export.py). Never imports train."""


def from_pretrained(directory: str, seed: int = 0, timeout_s: float = 120.0):
    """See mimo_runtime.hf.pretrained.from_pretrained (imported lazily: torch and megatron load then)."""
    from mimo_runtime.hf.pretrained import from_pretrained as load

    return load(directory, seed, timeout_s)


__all__ = ["from_pretrained"]
