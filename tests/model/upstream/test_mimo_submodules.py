"""Port of upstream tests/unit_tests/models/mimo/test_mimo_submodules.py to mimo_runtime.model on CPU.

Adapted only for CPU: the portable layer spec and torch norms (cpu.py), images 224 -> 64 px,
no CUDA seed."""

from typing import Any, Dict, List, Optional

import pytest
import torch
import torch.nn as nn
from megatron.core.models.vision.clip_vit_model import CLIPViTModel
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from mimo_runtime.model import ModalitySubmodules, VisionModalitySubmodules
from tests.model.upstream.cpu import CLIP_NORMS, get_gpt_layer_spec


class MockModalitySubmodule(ModalitySubmodules):
    def combine_embeddings(self, embeddings: List[torch.Tensor]) -> torch.Tensor:
        return

    def encode(self, data_batch: Dict) -> List[torch.Tensor]:
        return []

    def decode(self, embeddings: torch.Tensor, data_batch: Dict) -> torch.Tensor:
        return

    def project_embeddings(self, embeddings: List[torch.Tensor], is_input: bool = True) -> Optional[torch.Tensor]:
        return None

    def forward(self, encoder_inputs: Dict[str, Any], seq_lengths: Optional[torch.Tensor] = None):
        return None


def _clip(config, img):
    return CLIPViTModel(transformer_config=config, transformer_layer_spec=get_gpt_layer_spec(), img_h=img, img_w=img,
                        patch_dim=16, **CLIP_NORMS)


class TestBaseSubmodule:
    def setup_method(self, method):
        self.vision_config = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4,
                                               use_cpu_initialization=True)
        self.img_h = self.img_w = 64
        self.patch_dim = 16
        self.encoder_spec = ModuleSpec(module=CLIPViTModel, params={
            "transformer_config": self.vision_config, "transformer_layer_spec": get_gpt_layer_spec(),
            "img_h": self.img_h, "img_w": self.img_w, "patch_dim": self.patch_dim, **CLIP_NORMS})
        self.projection_spec = ModuleSpec(module=nn.Linear, params={
            "in_features": self.vision_config.hidden_size, "out_features": self.vision_config.hidden_size})
        self.module_spec = ModuleSpec(module=MockModalitySubmodule, submodules={
            "encoders": {"clip_encoder": self.encoder_spec}, "input_projections": [self.projection_spec]})

    def test_initialize_with_modules(self):
        encoder = _clip(self.vision_config, self.img_h)
        projection = nn.Linear(self.vision_config.hidden_size, self.vision_config.hidden_size)
        submodule = MockModalitySubmodule(encoders={"clip_encoder": encoder}, input_projections=[projection])
        assert len(submodule.encoders) == 1
        assert len(submodule.decoders) == 0
        assert len(submodule.input_projections) == 1
        assert len(submodule.output_projections) == 0
        assert isinstance(submodule.encoders['clip_encoder'], CLIPViTModel)
        assert isinstance(submodule.input_projections[0], nn.Linear)

    def test_initialize_from_spec(self):
        submodule_from_spec = MockModalitySubmodule.from_spec(self.module_spec)
        assert len(submodule_from_spec.encoders) == 1
        assert len(submodule_from_spec.decoders) == 0
        assert len(submodule_from_spec.input_projections) == 1
        assert len(submodule_from_spec.output_projections) == 0
        encoder = submodule_from_spec.encoders['clip_encoder']
        assert isinstance(encoder, CLIPViTModel)
        assert isinstance(submodule_from_spec.input_projections[0], nn.Linear)
        assert (encoder.img_h, encoder.img_w, encoder.patch_dim) == (self.img_h, self.img_w, self.patch_dim)
        projection = submodule_from_spec.input_projections[0]
        assert projection.in_features == projection.out_features == self.vision_config.hidden_size

    def test_encode_unwraps_tuple_encoder_output(self):
        hidden_size = self.vision_config.hidden_size
        batch_size, num_tokens = 2, 4

        class TupleEncoder(nn.Module):
            def forward(self, *, x):
                return torch.zeros(x.shape[0], num_tokens, hidden_size), torch.zeros(x.shape[0], 1)

        class PlainEncoder(nn.Module):
            def forward(self, *, x):
                return torch.zeros(x.shape[0], num_tokens, hidden_size)

        for encoder in (TupleEncoder(), PlainEncoder()):
            sub = MockModalitySubmodule(encoders={"enc": encoder}, input_projections=[])
            out = ModalitySubmodules.encode(sub, {"enc": {"x": torch.zeros(batch_size, 1)}})
            assert len(out) == 1
            assert out[0].shape == (batch_size * num_tokens, hidden_size)


class TestVisionSubmodule:
    def setup_method(self, method):
        self.hidden_size = 64
        self.vision_config = TransformerConfig(num_layers=1, hidden_size=self.hidden_size, num_attention_heads=4,
                                               use_cpu_initialization=True)
        self.img_h = self.img_w = 64
        self.patch_dim = 16
        self.vision_encoder = _clip(self.vision_config, self.img_h)
        self.input_projection = nn.Linear(self.hidden_size, self.hidden_size)
        self.vision_submodule = VisionModalitySubmodules(encoders={"clip_encoder": self.vision_encoder},
                                                         input_projections=[self.input_projection])
        self.vision_submodule.eval()

    def _tokens(self):
        return (self.img_h // self.patch_dim) * (self.img_w // self.patch_dim) + 1  # +1 for cls token

    def test_encode_with_random_data(self):
        images = torch.rand(2, 3, self.img_h, self.img_w)
        embeddings = self.vision_submodule.encode({"clip_encoder": {"x": images}})
        assert len(embeddings) == 1
        assert embeddings[0].shape == (2 * self._tokens(), self.hidden_size)

    def test_combine_embeddings(self):
        embedding1 = torch.rand(2 * 10, self.hidden_size)
        embedding2 = torch.rand(2 * 15, self.hidden_size)
        combined = self.vision_submodule.combine_embeddings([embedding1, embedding2])
        assert combined.shape == (2 * 25, self.hidden_size)
        single = self.vision_submodule.combine_embeddings([embedding1])
        assert single.shape == (2 * 10, self.hidden_size) and torch.all(single == embedding1)
        with pytest.raises(ValueError):
            self.vision_submodule.combine_embeddings([])

    def test_forward_pass(self):
        images = torch.rand(2, 3, self.img_h, self.img_w)
        output = self.vision_submodule({"clip_encoder": {"x": images}})
        assert output is not None
        assert output.shape == (2 * self._tokens(), self.hidden_size)

    def test_empty_data_batch(self):
        assert self.vision_submodule({}) is None


class TestVisionSubmoduleStageAware:
    def test_stage_aware_forward(self):
        hidden_size, projection_size = 64, 128
        hidden_states = torch.randn(10, hidden_size)
        submodule_default = VisionModalitySubmodules(input_projections=[nn.Linear(hidden_size, projection_size)])
        assert submodule_default.is_first_stage is True
        assert submodule_default.is_last_stage is True
        submodule_last = VisionModalitySubmodules(input_projections=[nn.Linear(hidden_size, projection_size)],
                                                  is_first_stage=False, is_last_stage=True)
        assert submodule_last.forward(hidden_states=hidden_states).shape == (10, projection_size)
        submodule_mid = VisionModalitySubmodules(input_projections=[nn.Linear(hidden_size, projection_size)],
                                                 is_first_stage=False, is_last_stage=False)
        assert submodule_mid.forward(hidden_states=hidden_states).shape == (10, hidden_size)
        assert submodule_mid.forward(hidden_states=None) is None
