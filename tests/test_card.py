"""The tiny model card's description of the model comes from the run's configuration."""

import dataclasses

from mmllm.eval.card import architecture
from mmllm.presets import PRESETS


def test_architecture_line_names_the_parts_and_only_the_extras_in_use():
    config = PRESETS["tiny"]
    plain = architecture({"model": config.to_dict()})
    assert "image ViT 4 x 128 (conv stem, 64 px, patch 8)" in plain
    assert "decoder 4 x 256 with gated cross-attention in every block" in plain
    assert "null" not in plain and "position" not in plain and "per token" in plain
    projector = dataclasses.replace(config.projector, image_positions=True, null_tokens=2)
    extras = dataclasses.replace(config, projector=projector).to_dict()
    line = architecture({"model": extras, "loss_per_example": True})
    assert "a learned embedding per image token position" in line
    assert "2 learned null media tokens" in line and "averaged per example" in line
