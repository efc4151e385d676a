"""The instructions a caption is trained and asked with (one place for the API and the data)."""

from __future__ import annotations

IMAGE_CAPTION_PROMPT = "describe the image:"
AUDIO_CAPTION_PROMPT = "describe the sound:"


def caption_prompt(has_image: bool) -> str:
    """The instruction a caption record is trained and asked with."""
    return IMAGE_CAPTION_PROMPT if has_image else AUDIO_CAPTION_PROMPT
