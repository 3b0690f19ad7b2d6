"""Image files -> pixel arrays of the shape the vision encoder takes.

With a `preprocessor_config.json` in the tokenizer directory (an HF model directory carries both),
images go through that transformers image processor (resize, crop, normalize as the vision tower
was trained); without one they are resized to the model's (channels, height, width) and scaled to
[0, 1].
"""

import os
from typing import Optional, Tuple

import numpy as np

PROCESSOR_FILE = "preprocessor_config.json"


def load_processor(directory: str):
    """The directory's HF image processor, or None when it has no preprocessor_config.json (or one of an
    audio feature extractor: data/audio_files.py reads that)."""
    path = os.path.join(directory, PROCESSOR_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        if "WhisperFeatureExtractor" in f.read():
            return None
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(directory, local_files_only=True)


def check_image(path: str) -> None:
    """Raises (OSError, PIL errors) when the file is not a readable image; reads its whole stream."""
    from PIL import Image

    with Image.open(path) as im:
        im.verify()


def load_pixels(path: str, shape: Tuple[int, int, int], processor: Optional[object]) -> np.ndarray:
    """(C, H, W) float32 pixels of one image file."""
    from PIL import Image

    with Image.open(path) as im:
        return pixels_of(im, shape, processor)


def pixels_of(im, shape: Tuple[int, int, int], processor: Optional[object]) -> np.ndarray:
    from PIL import Image

    channels, height, width = shape
    if processor is not None:
        pixels = processor(images=im.convert("RGB"), return_tensors="np")["pixel_values"][0]
        return np.asarray(pixels, dtype=np.float32)
    im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32) / 255.0
    return a[None] if channels == 1 else a.transpose(2, 0, 1).copy()
