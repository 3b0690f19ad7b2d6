"""Name-mapping hooks the pretrained tests name in `map:` (importable as tests.pretrained.hooks)."""

RENAMES = {"vit.": "encoders.digits_vit.", "proj.": "input_projections.0.encoder."}


def from_vit_names(name: str):
    """A standalone ViT's names -> this runtime's, dropping its classifier head."""
    if name.startswith("head."):
        return None
    for old, new in RENAMES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def collide(name: str):
    return "encoders.digits_vit.pos_embed"


def drop_layers(name: str):
    """Checkpoint keys without the encoder's stacked layers (a strict load then misses them)."""
    return None if ".block.layers." in name else name
