"""The one error hierarchy every user-facing failure raises.

Errors caused by the input subclass ``ValueError`` too, so ``except ValueError`` keeps working.
Messages name the input and the limit it broke.
"""


class MMLLMError(Exception):
    """Base of every error mmllm raises on purpose."""


class InputError(MMLLMError, ValueError):
    """The caller's input is unusable (bad file, bad argument, over a limit)."""


class ImageError(InputError):
    """An image could not be decoded or breaks a limit."""


class AudioError(InputError):
    """An audio clip could not be decoded or breaks a limit."""


class TextError(InputError):
    """A prompt or question is empty, too long or otherwise unusable."""


class MediaLimitError(InputError):
    """A request holds more media (items, pixels, seconds, tokens) than allowed."""


class GenerationError(InputError):
    """Generation arguments are invalid (e.g. ``top_p`` outside (0, 1])."""


class DataError(InputError):
    """A dataset record is malformed; the message names the file and line."""


class ConfigError(MMLLMError, ValueError):
    """A configuration is invalid or cannot be read."""


class CheckpointError(MMLLMError):
    """A checkpoint folder is missing, unreadable, or does not match its config."""
