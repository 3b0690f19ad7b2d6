"""A user-written image encoder as a MIMO modality submodule, feeding a megatron GPT.

`build_model(args, ctx)` is the model factory the topology names (`model.factory:
"conv_vlm:build_model"`). It runs on every rank and describes the whole model as a
MimoModelConfig; the runtime builds only the modules this rank holds, initializes them from
(seed, parameter name) and trains them on the topology's ranks.
"""

import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model import MimoModelConfig, StagedModalitySubmodules, layer_spec
from mimo_runtime.model.language import LanguageModel
from mimo_runtime.model.specs import transformer_config

IMAGE_TOKEN = 3  # the placeholder id the data puts in input_ids, one per encoder output row
ROWS_PER_IMAGE = 4  # an 8x8 image -> a 2x2 grid of embeddings


class ConvEncoder(torch.nn.Module):
    """(images, 1, 8, 8) pixels -> (images * 4, hidden) rows, images concatenated in order.

    Encoders are built with pre_process/post_process (their pipeline stage); a one-stage encoder
    like this one ignores them.
    """

    def __init__(self, channels: int, hidden: int, pre_process: bool = True, post_process: bool = True):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels, hidden, kernel_size=4, stride=4)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.nn.functional.gelu(self.conv1(pixels)))  # (n, hidden, 2, 2)
        return x.flatten(2).transpose(1, 2).reshape(-1, x.size(1))  # (n * 4, hidden)


def build_model(args, ctx):
    """args: from the topology's model.args. ctx: this rank's plan, stage and process groups."""
    hidden = args["hidden"]
    lang, stage = ctx.parallel("language"), ctx.stage("language")
    language = ModuleSpec(LanguageModel, params=dict(  # megatron's GPTModel, CPU-portable
        config=transformer_config(hidden, args["heads"], args["layers"], 4 * hidden, lang.tp, lang.pp),
        transformer_layer_spec=layer_spec(causal=True), vocab_size=args["vocab_size"],
        max_sequence_length=args["seq_length"], pre_process=stage.is_first_stage,
        post_process=stage.is_last_stage, share_embeddings_and_output_weights=True,
        position_embedding_type="rope", pg_collection=ctx.pgs["language"]))
    encoder = ModuleSpec(ConvEncoder, params=dict(channels=args["channels"], hidden=args["encoder_hidden"]))
    projection = ModuleSpec(torch.nn.Linear, params=dict(in_features=args["encoder_hidden"], out_features=hidden))
    images = ModuleSpec(StagedModalitySubmodules, params=dict(modality="images", pg_collection=ctx.pgs["images"]),
                        submodules={"encoders": {"conv": encoder}, "input_projections": [projection]})
    return MimoModelConfig(language_model_spec=language, modality_submodules_spec={"images": images},
                           special_token_ids={"images": IMAGE_TOKEN}, tokens_per_item={"images": ROWS_PER_IMAGE})
