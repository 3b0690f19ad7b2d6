"""Port of upstream tests/unit_tests/models/mimo/test_mimo_embedding_alignment.py (CPU, imports
pointed at mimo_runtime.model; otherwise as upstream: a MagicMock language model)."""

from unittest.mock import MagicMock

import pytest
import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model import MimoModel, MimoModelConfig


class TestEmbeddingAlignment:
    def setup_method(self):
        language_model_spec = ModuleSpec(module=MagicMock, params={'config': MagicMock(
            context_parallel_size=1, sequence_parallel=False, pipeline_model_parallel_size=1)})
        self.mimo_config = MimoModelConfig(language_model_spec=language_model_spec, modality_submodules_spec={},
                                           special_token_ids={})
        self.model = MimoModel(self.mimo_config)
        self.hidden_dim = 64
        self.device = torch.device("cpu")

    def create_marker_embeddings(self, num_embeddings, marker_positions=None, marker_values=None):
        if marker_positions is None:
            marker_positions = list(range(num_embeddings))
        embeddings = torch.zeros((num_embeddings, self.hidden_dim), device=self.device)
        for i, pos in enumerate(marker_positions):
            if marker_values is not None and i < len(marker_values):
                marker_value = marker_values[i]
            else:
                marker_value = float(i + 1) * 10.0
            embeddings[i, pos % self.hidden_dim] = marker_value
        return embeddings

    def _align(self, modality_embeddings, input_ids, special_token_ids):
        return self.model.align_embeddings_by_token_positions(
            modality_embeddings=modality_embeddings, input_ids=input_ids, special_token_ids=special_token_ids)

    def test_basic_alignment(self):
        batch_size, seq_length = 2, 8
        input_ids = torch.full((batch_size, seq_length), 100, dtype=torch.long)
        image_token_id = 50
        input_ids[0, 1] = image_token_id
        input_ids[1, 3] = image_token_id
        text_embeddings = torch.full((14, self.hidden_dim), 0.01)
        vision_embeddings = self.create_marker_embeddings(2, marker_positions=[0, 1])
        combined = self._align({"text": text_embeddings, "vision": vision_embeddings}, input_ids,
                               {"vision": image_token_id})
        assert combined.shape == (seq_length, batch_size, self.hidden_dim)
        assert combined[1, 0, 0] == 10.0
        assert torch.all(combined[1, 0, 1:] == 0.0)
        assert combined[3, 1, 1] == 20.0
        assert torch.all(combined[3, 1, :1] == 0.0)
        assert torch.all(combined[3, 1, 2:] == 0.0)
        text_positions = [(0, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0),
                          (0, 1), (1, 1), (2, 1), (4, 1), (5, 1), (6, 1), (7, 1)]
        for s, b in text_positions:
            assert torch.all(combined[s, b] == 0.01)

    def test_multiple_modalities(self):
        batch_size, seq_length = 2, 10
        input_ids = torch.full((batch_size, seq_length), 100, dtype=torch.long)
        vision_token_id, audio_token_id, video_token_id = 50, 51, 52
        input_ids[0, 1], input_ids[0, 4], input_ids[0, 8] = vision_token_id, audio_token_id, video_token_id
        input_ids[1, 2], input_ids[1, 5], input_ids[1, 7] = vision_token_id, audio_token_id, video_token_id
        text_embeddings = torch.full((14, self.hidden_dim), 0.01)
        vision = self.create_marker_embeddings(2, marker_positions=[0, 0], marker_values=[10.0, 20.0])
        audio = self.create_marker_embeddings(2, marker_positions=[1, 1], marker_values=[30.0, 40.0])
        video = self.create_marker_embeddings(2, marker_positions=[2, 2], marker_values=[50.0, 60.0])
        combined = self._align({"text": text_embeddings, "vision": vision, "audio": audio, "video": video},
                               input_ids, {"vision": vision_token_id, "audio": audio_token_id,
                                           "video": video_token_id})
        assert combined.shape == (seq_length, batch_size, self.hidden_dim)
        assert torch.isclose(combined[1, 0, 0], torch.tensor(10.0))
        assert torch.isclose(combined[4, 0, 1], torch.tensor(30.0))
        assert torch.isclose(combined[8, 0, 2], torch.tensor(50.0))
        assert torch.isclose(combined[2, 1, 0], torch.tensor(20.0))
        assert torch.isclose(combined[5, 1, 1], torch.tensor(40.0))
        assert torch.isclose(combined[7, 1, 2], torch.tensor(60.0))
        assert torch.all(combined[1, 0, 1:] == 0.0)
        assert torch.all(combined[5, 1, :1] == 0.0)
        assert torch.all(combined[5, 1, 2:] == 0.0)

    def test_multiple_images_with_variable_length(self):
        batch_size, seq_length = 2, 10
        input_ids = torch.full((batch_size, seq_length), 100, dtype=torch.long)
        vision_token_id = 50
        for s in (1, 2, 3, 5, 6):
            input_ids[0, s] = vision_token_id
        for s in (2, 3, 4, 5):
            input_ids[1, s] = vision_token_id
        text_embeddings = torch.full((11, self.hidden_dim), 0.01)
        image_0_1 = self.create_marker_embeddings(3, marker_positions=[0, 1, 2], marker_values=[101.0, 102.0, 103.0])
        image_0_2 = self.create_marker_embeddings(2, marker_positions=[3, 4], marker_values=[104.0, 105.0])
        image_1_1 = self.create_marker_embeddings(4, marker_positions=[5, 6, 7, 8],
                                                  marker_values=[201.0, 202.0, 203.0, 204.0])
        vision_embeddings = torch.cat([image_0_1, image_0_2, image_1_1], dim=0)
        combined = self._align({"text": text_embeddings, "vision": vision_embeddings}, input_ids,
                               {"vision": vision_token_id})
        assert combined.shape == (seq_length, batch_size, self.hidden_dim)
        expected = {(1, 0, 0): 101.0, (2, 0, 1): 102.0, (3, 0, 2): 103.0, (5, 0, 3): 104.0, (6, 0, 4): 105.0,
                    (2, 1, 5): 201.0, (3, 1, 6): 202.0, (4, 1, 7): 203.0, (5, 1, 8): 204.0}
        for (s, b, h), value in expected.items():
            assert torch.isclose(combined[s, b, h], torch.tensor(value))
        for b in range(batch_size):
            for s in [(1, 2, 3, 5, 6), (2, 3, 4, 5)][b]:
                emb = combined[s, b]
                nonzero = torch.nonzero(emb)
                assert nonzero.nelement() > 0
                pos = nonzero[0].item()
                assert torch.all(emb[:pos] == 0.0) and torch.all(emb[pos + 1:] == 0.0)

    def test_validation_errors(self):
        batch_size, seq_length = 2, 5
        input_ids = torch.full((batch_size, seq_length), 100, dtype=torch.long)
        vision_token_id = 50
        input_ids[0, 1] = input_ids[0, 3] = input_ids[1, 2] = vision_token_id
        text_embeddings = torch.full((7, self.hidden_dim), 0.01)
        vision_embeddings = self.create_marker_embeddings(2)
        with pytest.raises(ValueError, match="Number of vision tokens.*does not match"):
            self._align({"text": text_embeddings, "vision": vision_embeddings}, input_ids,
                        {"vision": vision_token_id})
        input_ids = torch.full((batch_size, seq_length), 100, dtype=torch.long)
        input_ids[0, 1] = input_ids[1, 2] = vision_token_id
        text_embeddings = torch.full((6, self.hidden_dim), 0.01)
        with pytest.raises(ValueError, match="Number of text tokens.*does not match"):
            self._align({"text": text_embeddings, "vision": self.create_marker_embeddings(2)}, input_ids,
                        {"vision": vision_token_id})

    def test_missing_special_token_id(self):
        batch_size, seq_length = 2, 5
        input_ids = torch.full((batch_size, seq_length), 100, dtype=torch.long)
        text_embeddings = torch.full((batch_size * seq_length, self.hidden_dim), 0.01)
        with pytest.raises(ValueError, match="No special token ID defined for modality vision"):
            self._align({"text": text_embeddings, "vision": self.create_marker_embeddings(1)}, input_ids, {})
