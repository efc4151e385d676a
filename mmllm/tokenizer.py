"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``), stored as ``tokenizer.json``.

Special tokens play four roles: padding, begin, end of answer, and the prompt's end (the answer
follows). Our own tokenizers use ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<sep>`` 3. A pretrained
LM's ``tokenizer.json`` keeps its own vocabulary: ``SpecialTokens`` names which of its tokens plays
each role (e.g. SmolLM2's ``<|im_start|>``; GPT-2's ``<|endoftext|>`` both begins and ends, and it
has no prompt end), saved beside it as ``tokenizer_roles.json``, with an optional prompt template
(an instruction-tuned LM reads its prompts in its own chat format) and caption prompt (what an
imported captioner is asked with: nothing for a ``VisionEncoderDecoderModel``, a text prefix
for BLIP). Byte-level means any unicode string encodes, with no unknown token.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from mmllm.errors import CheckpointError, TextError


@dataclass(frozen=True)
class SpecialTokens:
    """Which token string plays each role. ``pad`` may equal ``eos`` (the Llama convention), and
    ``bos`` too (GPT-2's); ``sep`` None: the tokenizer has no prompt end."""

    pad: str = "<pad>"
    bos: str = "<bos>"
    eos: str = "<eos>"
    sep: str | None = "<sep>"

    @classmethod
    def of_ids(
        cls, backend: HFTokenizer, bos: int | None, eos: int | None, pad: int | None, source: str
    ) -> SpecialTokens:
        """The roles a model's own token ids give ``backend``'s tokens: begin, end, padding
        (the end token where none is set, or it is not a token), no prompt end;
        ``CheckpointError`` naming ``source`` where begin or end is not a token."""

        def name(token_id: int | None) -> str | None:
            return backend.id_to_token(token_id) if isinstance(token_id, int) else None

        begin, end = name(bos), name(eos)
        if begin is None or end is None:
            raise CheckpointError(
                f"{source}: the begin and end token ids ({bos}, {eos}) must both be tokens"
            )
        return cls(pad=name(pad) or end, bos=begin, eos=end, sep=None)


@dataclass(frozen=True)
class StopTokens:
    """The ids generation treats specially: ``eos`` ends a row, ``pad`` fills it afterwards
    and ``never`` are never generated (``Tokenizer.stops``)."""

    eos: int
    pad: int
    never: tuple[int, ...] = ()


def roles_path(tokenizer_file: Path) -> Path:
    """Where the roles of ``tokenizer_file`` are stored: ``<stem>_roles.json`` beside it."""
    return tokenizer_file.with_name(f"{tokenizer_file.stem}_roles.json")


SPECIAL_TOKENS = list(dataclasses.astuple(SpecialTokens()))


class Tokenizer:
    """text <-> token ids, plus the ids of the special tokens."""

    def __init__(
        self,
        backend: HFTokenizer,
        special: SpecialTokens | None = None,
        prompt_template: str | None = None,
        caption_prompt: str | None = None,
        lowercase_prompts: bool = False,
    ):
        """``prompt_template``: how a prompt is laid out, with ``{prompt}`` where it goes and
        special tokens written out (e.g. ``<|im_start|>user\\n{prompt}<|im_end|>...``); None:
        ``<bos> prompt <sep>`` (``<bos> prompt`` without a prompt end). ``caption_prompt``:
        the prompt a caption is asked with (None: ours, ``mmllm.prompts``).
        ``lowercase_prompts``: prompts are read in lower case, for a model that only ever saw
        lower-case prompts (our synthetic world's): "What color is it?", as people type it and
        as speech is transcribed, reads as "what color is it?"."""
        self.backend = backend
        self.special = special or SpecialTokens()
        self.prompt_template = prompt_template
        self.caption_prompt = caption_prompt
        self.lowercase_prompts = lowercase_prompts
        names = dataclasses.astuple(self.special)
        ids = [backend.token_to_id(t) if t is not None else None for t in names]
        lacking = [t for t, i in zip(names, ids, strict=True) if t is not None and i is None]
        if lacking:
            raise CheckpointError(f"tokenizer lacks special tokens {lacking}")
        self.pad_id, self.bos_id, self.eos_id, self.sep_id = ids
        if self.eos_id == self.sep_id:
            raise CheckpointError(
                f"the end token {self.special.eos!r} must differ from the prompt-end token"
            )

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

    def with_words(self, words: Iterable[str]) -> Tokenizer:
        """This tokenizer with each of ``words`` (e.g. " espresso", with its leading space as
        it follows another word) made one token: the BPE gains, at its lowest priority, the
        chain of merges that joins the word's current pieces. Tokens keep their ids (new ones
        are appended), and text without those words is cut as before unless it holds the same
        pairs of pieces. A word that is one token already, or that the pre-tokenizer splits,
        is skipped."""
        state = json.loads(self.backend.to_str())
        model = state["model"]
        if model.get("type") != "BPE":
            raise CheckpointError("only a BPE tokenizer can gain words")
        vocab, merges = model["vocab"], model["merges"]
        as_pair = not merges or isinstance(merges[0], list)  # newer files: [a, b]; older: "a b"
        next_id = self.vocab_size
        backend = self.backend
        for word in sorted(dict.fromkeys(words), key=len):
            pieces = backend.encode(word, add_special_tokens=False).tokens
            if len(pieces) < 2 or len(backend.pre_tokenizer.pre_tokenize_str(word)) != 1:
                continue
            joined = pieces[0]
            for piece in pieces[1:]:
                merges.append([joined, piece] if as_pair else f"{joined} {piece}")
                joined += piece
                if joined not in vocab:
                    vocab[joined], next_id = next_id, next_id + 1
            backend = HFTokenizer.from_str(json.dumps(state))
        return Tokenizer(
            backend, self.special, self.prompt_template, self.caption_prompt, self.lowercase_prompts
        )

    @classmethod
    def load(cls, path: str | Path, special: SpecialTokens | None = None) -> Tokenizer:
        """Read ``tokenizer.json`` at ``path``; any ``tokenizer.json`` with ``special`` roles.

        Without ``special``, the roles come from ``<stem>_roles.json`` beside the file when it
        exists (written by ``save``), else they are our own ``<pad> <bos> <eos> <sep>``.
        """
        path = Path(path)
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad files
            raise CheckpointError(f"cannot read tokenizer {path}: {err}") from err
        roles, template, caption, lower = roles_path(path), None, None, False
        if special is None and roles.is_file():
            try:
                fields = json.loads(roles.read_text())
                template = fields.pop("prompt_template", None)
                caption = fields.pop("caption_prompt", None)
                lower = bool(fields.pop("lowercase_prompts", False))
                special = SpecialTokens(**fields)
            except (OSError, ValueError, TypeError, AttributeError) as err:
                raise CheckpointError(f"cannot read tokenizer roles {roles}: {err}") from err
        return cls(backend, special, template, caption, lower)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (and ``<stem>_roles.json`` when the roles are not ours or a
        prompt template, a caption prompt or lower-case prompts are set)."""
        path = Path(path)
        self.backend.save(str(path))
        roles = roles_path(path)
        fields: dict = dataclasses.asdict(self.special)
        if self.prompt_template is not None:
            fields["prompt_template"] = self.prompt_template
        if self.caption_prompt is not None:
            fields["caption_prompt"] = self.caption_prompt
        if self.lowercase_prompts:
            fields["lowercase_prompts"] = True
        if fields != dataclasses.asdict(SpecialTokens()):  # other roles, or settings added
            roles.write_text(json.dumps(fields, indent=2) + "\n")
        elif roles.exists():
            roles.unlink()

    @property
    def prompt_template(self) -> str | None:
        return self._prompt_template

    @prompt_template.setter
    def prompt_template(self, template: str | None) -> None:
        if template is not None and template.count("{prompt}") != 1:
            raise CheckpointError(f"prompt template needs one {{prompt}}: {template!r}")
        self._prompt_template = template

    @property
    def never_generated(self) -> tuple[int, ...]:
        """Special tokens a model must never output: padding, begin, and the prompt end (the
        end token itself stays allowed when it doubles as either)."""
        ids = (self.pad_id, self.bos_id, self.sep_id)
        return tuple(dict.fromkeys(i for i in ids if i is not None and i != self.eos_id))

    @property
    def stops(self) -> StopTokens:
        """What generation stops on, pads with and never emits."""
        return StopTokens(self.eos_id, self.pad_id, self.never_generated)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(valid_text(text), add_special_tokens=False).ids

    def prompt_ids(self, prompt: str) -> list[int]:
        """``<bos> prompt <sep>`` (or the prompt template): what the model reads before it
        answers."""
        if self.lowercase_prompts:
            prompt = valid_text(prompt).lower()
        if self.prompt_template is not None:
            return self.encode(self.prompt_template.replace("{prompt}", prompt))
        end = [] if self.sep_id is None else [self.sep_id]
        return [self.bos_id, *self.encode(prompt), *end]

    def raw_ids(self, text: str) -> list[int]:
        """``text`` as the tokenizer alone would give it (with its own added special tokens,
        e.g. a Llama tokenizer's begin token; none for GPT-2's): a plain continuation."""
        return self.backend.encode(valid_text(text), add_special_tokens=True).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)


def valid_text(text: object, what: str = "text") -> str:
    """``text`` if it is a string of valid Unicode, else ``TextError`` naming ``what`` (a lone
    surrogate such as "\\ud800" cannot be encoded, and the tokenizer would crash on it)."""
    if not isinstance(text, str):
        raise TextError(f"the {what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TextError(
            f"the {what} is not valid Unicode: {text[error.start : error.end]!r} at position "
            f"{error.start} (a lone surrogate)"
        ) from error
    return text


def tokenizer_for_records(source, vocab_size: int, samples: int) -> Tokenizer:
    """A byte-level BPE trained on the prompts and targets of ``source``'s first ``samples``
    records (any indexable of records with ``prompt`` and ``target``); it reads prompts in
    lower case when all of those prompts are (``lowercase_prompts``)."""
    texts, prompts = [], []
    for i in range(min(samples, len(source))):
        record = source[i]
        texts += [record.prompt, record.target]
        prompts.append(record.prompt)
    tokenizer = Tokenizer.train(texts, vocab_size=vocab_size)
    tokenizer.lowercase_prompts = bool(prompts) and all(p == p.lower() for p in prompts)
    return tokenizer
