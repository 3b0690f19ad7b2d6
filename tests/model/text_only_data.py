"""A data factory for the text-only training test: the preset's captioning data with no items."""

from mimo_runtime.data.dataset import CaptionDataset, Sample


class TextOnlyCaptions(CaptionDataset):
    """Every sample has no images and no audio (its caption is "none"): text-only batches."""

    def sample(self, i: int) -> Sample:
        if not 0 <= i < self.size:
            raise IndexError(f"sample {i} out of range for {self.split} split of size {self.size}")
        return Sample((), ())


def build(args, ctx):
    return TextOnlyCaptions(args["preset"], ctx.split, ctx.seed, int(args.get("size", 0)))
