"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``), stored as ``tokenizer.json``.

Special tokens: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<sep>`` 3 (ends the prompt; the
answer follows). Byte-level means any unicode string encodes, with no unknown token.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from mmllm.errors import CheckpointError

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<sep>"]


class Tokenizer:
    """text <-> token ids, plus the ids of the special tokens."""

    def __init__(self, backend: HFTokenizer):
        self.backend = backend
        ids = [backend.token_to_id(t) for t in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            raise CheckpointError(f"tokenizer lacks special tokens {SPECIAL_TOKENS}")
        self.pad_id, self.bos_id, self.eos_id, self.sep_id = ids

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
        """Train a byte-level BPE of ``vocab_size`` tokens on ``texts``."""
        backend = HFTokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as err:  # tokenizers raises a bare Exception on bad files
            raise CheckpointError(f"cannot read tokenizer {path}: {err}") from err

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    @property
    def never_generated(self) -> tuple[int, ...]:
        """Special tokens a model must never output: padding, begin, and the prompt end."""
        return (self.pad_id, self.bos_id, self.sep_id)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, prompt: str) -> list[int]:
        """``<bos> prompt <sep>``: what the model reads before it answers."""
        return [self.bos_id, *self.encode(prompt), self.sep_id]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)
