"""The built-in synthetic world: images of shapes, clips of tones, captions and questions.

DESIGN.md, "The synthetic world". ``SyntheticWorld(split, seed)[index]`` is a pure function of
(split, seed, index): its numpy generator is seeded from all three, so any example is reproducible
byte for byte and the splits never share a stream. "heldout" uses unseen seeds with the training
question templates; "heldout-paraphrase" uses unseen seeds and only the question templates that
training never sees (the last template of every question key). Every question is asked only when
its one-word (or one-digit) answer is unambiguous for the scene or clip, and yes/no answers are
balanced by construction. :func:`caption_attributes` parses a caption (ours or a model's) into the
same dict that :func:`scene_attributes` / :func:`clip_attributes` give from ground truth.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmllm.data.synthetic_audio import (
    DIRECTIONS,
    MAX_BEEPS,
    PITCHES,
    SAMPLE_RATE,
    SOUND_KINDS,
    TIMBRES,
    Clip,
    clip_caption,
    clip_question,
    sample_clip,
    synthesize,
    to_pcm16,
)
from mmllm.data.synthetic_image import (
    COLORS,
    KINDS,
    NUMBER_WORDS,
    SIZES,
    WORDS,
    YES_NO,
    Fields,
    Scene,
    Shape,
    pick,
    plural,
    question_referents,
    render_scene,
    sample_scene,
    scene_caption,
    scene_question,
)
from mmllm.errors import InputError
from mmllm.prompts import AUDIO_CAPTION_PROMPT, IMAGE_CAPTION_PROMPT

__all__ = [
    "ANSWERS",
    "AUDIO_CAPTION_PROMPT",
    "DEFAULT_TASK_MIX",
    "IMAGE_CAPTION_PROMPT",
    "SAMPLE_RATE",
    "SPLITS",
    "TEMPLATES",
    "Clip",
    "Example",
    "Scene",
    "Shape",
    "SyntheticWorld",
    "caption_attributes",
    "clip_attributes",
    "export_jsonl",
    "match_template",
    "scene_attributes",
]

SPLITS = ("train", "heldout", "heldout-paraphrase")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
_SALT = 0x5EED_3D  # keeps these streams apart from any other use of small integer seeds
DEFAULT_TASK_MIX = {
    "image_vqa": 0.35,
    "audio_vqa": 0.2,
    "both_vqa": 0.15,
    "image_caption": 0.2,
    "audio_caption": 0.1,
}
_MAX_REDRAWS = 100  # scenes tried per question; each try succeeds with probability >= ~1/2
DISTRACTOR_P = 0.25  # chance that a single-modality question also carries unrelated other media

# Question templates per key. The LAST template of every key is held out: only the
# "heldout-paraphrase" split uses it, and it uses nothing else.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": (
        "what color is the {ref}?",
        "what is the color of the {ref}?",
        "which color is the {ref}?",
        "can you tell me the color of the {ref}?",
    ),
    "shape": (
        "what shape is the {ref}?",
        "which shape is the {ref}?",
        "what kind of shape is the {ref}?",
        "the {ref} has what shape?",
    ),
    "count": (
        "how many shapes are there?",
        "how many shapes are in the image?",
        "count the shapes.",
        "what is the number of shapes?",
    ),
    "count_kind": (
        "how many {kinds} are there?",
        "how many {kinds} are in the image?",
        "count the {kinds}.",
        "what is the number of {kinds}?",
    ),
    "presence": (
        "is there {a_color} {kind}?",
        "do you see {a_color} {kind}?",
        "does the image contain {a_color} {kind}?",
        "can you find {a_color} {kind}?",
    ),
    "position_x": (
        "is the {ref} on the left or the right?",
        "is the {ref} on the left or right side?",
        "which side is the {ref} on, left or right?",
        "is the {ref} in the left or the right half?",
    ),
    "position_y": (
        "is the {ref} at the top or the bottom?",
        "is the {ref} near the top or the bottom?",
        "is the {ref} in the top or bottom part?",
        "is the {ref} in the upper or the lower half?",
    ),
    "relation_x": (
        "is the {ref} left of the {ref2}?",
        "is the {ref} to the left of the {ref2}?",
        "is the {ref} further left than the {ref2}?",
        "does the {ref} appear left of the {ref2}?",
    ),
    "relation_y": (
        "is the {ref} above the {ref2}?",
        "is the {ref} higher than the {ref2}?",
        "is the {ref} over the {ref2}?",
        "does the {ref} sit above the {ref2}?",
    ),
    "size": (
        "is the {ref} small or large?",
        "what size is the {ref}?",
        "is the {ref} large or small?",
        "how big is the {ref}, small or large?",
    ),
    "text": (
        "what word is written?",
        "what does the text say?",
        "which word is shown?",
        "what word can you read?",
    ),
    "pitch": (
        "is the sound low, mid or high?",
        "what is the pitch of the sound?",
        "how high is the pitch?",
        "is the pitch low, mid or high?",
    ),
    "timbre": (
        "what waveform is the tone?",
        "is the tone sine, square or saw?",
        "what is the timbre of the tone?",
        "which wave shape does the tone have?",
    ),
    "beeps": (
        "how many beeps are there?",
        "how many beeps do you hear?",
        "count the beeps.",
        "what is the number of beeps?",
    ),
    "direction": (
        "is the chirp rising or falling?",
        "is the pitch rising or falling?",
        "is the chirp's pitch rising or falling?",
        "is the sweep rising or falling?",
    ),
    "noise": (
        "is it a burst of noise?",
        "is the sound noise?",
        "is this a noise burst?",
        "is the clip just noise?",
    ),
    "sound": (
        "what kind of sound is it?",
        "what type of sound is this?",
        "is it a tone, beeps, a chirp or noise?",
        "what sort of sound do you hear?",
    ),
    "compare": (
        "are there as many beeps as shapes?",
        "is the number of beeps equal to the number of shapes?",
        "do the beeps match the number of shapes?",
        "does the beep count equal the shape count?",
    ),
    "more": (
        "are there more beeps than {kinds}?",
        "are there more beeps than {kinds} in the image?",
        "is the number of beeps greater than the number of {kinds}?",
        "do the beeps outnumber the {kinds}?",
    ),
    "match": (
        "is the {color} shape a {kind} and is the sound {dir}?",
        "is the {color} object a {kind} and is the chirp {dir}?",
        "is the {color} shape a {kind} while the sound is {dir}?",
        "is the chirp {dir} and is the {color} shape a {kind}?",
    ),
}
QTYPE = {key: key for key in TEMPLATES} | {
    "count_kind": "count",
    "position_x": "position",
    "position_y": "position",
    "relation_x": "relation",
    "relation_y": "relation",
}
_IMAGE_KEYS = {
    "color": 1.0,
    "shape": 1.0,
    "count": 0.5,
    "count_kind": 0.5,
    "presence": 1.0,
    "position_x": 0.5,
    "position_y": 0.5,
    "relation_x": 0.4,
    "relation_y": 0.4,
    "size": 0.7,
    "text": 0.5,
}
_AUDIO_KEYS = {
    "pitch": 1.0,
    "timbre": 0.8,
    "beeps": 1.0,
    "direction": 0.8,
    "noise": 0.7,
    "sound": 1.0,
}
_BOTH_KEYS = {"compare": 1.0, "more": 1.0, "match": 1.0}
QUESTION_WEIGHTS = {"image_vqa": _IMAGE_KEYS, "audio_vqa": _AUDIO_KEYS, "both_vqa": _BOTH_KEYS}
ANSWERS: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": KINDS,
    "count": tuple(str(i) for i in range(5)),
    "presence": YES_NO,
    "position": ("left", "right", "top", "bottom"),
    "relation": YES_NO,
    "size": SIZES,
    "text": WORDS,
    "pitch": tuple(PITCHES),
    "timbre": TIMBRES,
    "beeps": tuple(str(i) for i in range(1, MAX_BEEPS + 1)),
    "direction": DIRECTIONS,
    "noise": YES_NO,
    "sound": SOUND_KINDS,
    "compare": YES_NO,
    "more": YES_NO,
    "match": YES_NO,
}


@dataclass
class Example:
    """One sample. ``category`` names the media the target depends on; the other media, if
    present, is an unrelated distractor. ``scene``/``clip`` are the ground truth of the media."""

    image: Image.Image | None  # RGB, image_size x image_size
    audio: np.ndarray | None  # (samples,) float32 in [-1, 1] at SAMPLE_RATE
    task: str  # "caption" | "vqa"
    prompt: str
    target: str
    category: str  # "image" | "audio" | "both"
    qtype: str
    scene: Scene | None
    clip: Clip | None
    # image questions: the scene's shapes the question names, in groups (question_referents)
    referents: tuple[tuple[int, ...], ...] = ()


# ---------------------------------------------------------------- attributes (caption scoring)

_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}
_SHAPE_HEADS = {k: k for k in KINDS} | {plural(k): k for k in KINDS}
_TOTAL_HEADS = {"shape", "shapes", "object", "objects"}
_SOUND_HEADS = {
    "tone": "tone",
    "tones": "tone",
    "beep": "beeps",
    "beeps": "beeps",
    "chirp": "chirp",
    "chirps": "chirp",
    "sweep": "chirp",
    "noise": "noise",
}
_SIZE_WORDS = {"small": "small", "tiny": "small", "large": "large", "big": "large"}
_PITCH_WORDS = {"low": "low", "mid": "mid", "medium": "mid", "high": "high"}
_TIMBRE_WORDS = {"sine": "sine", "saw": "saw", "sawtooth": "saw", "square": "square"}
_DIRECTION_WORDS = {"rising": "rising", "rises": "rising", "falling": "falling", "falls": "falling"}
_MODIFIERS = (
    {"short", "long", "steady", "pitched", "single"}
    | set(_PITCH_WORDS)
    | set(_TIMBRE_WORDS)
    | set(_DIRECTION_WORDS)
)


def _empty_attributes() -> dict[str, Any]:
    """All attribute keys, nothing known."""
    return {
        "count": None,
        "shapes": {},
        "colors": {},
        "sizes": {},
        "word": None,
        "sound": None,
        "pitch": None,
        "timbre": None,
        "beeps": None,
        "direction": None,
    }


def scene_attributes(scene: Scene) -> dict[str, Any]:
    """Ground-truth attributes of a scene, in the dict shape of :func:`caption_attributes`."""
    out = _empty_attributes()
    out["count"] = len(scene.shapes)
    out["shapes"] = dict(Counter(s.kind for s in scene.shapes))
    out["colors"] = dict(Counter(s.color for s in scene.shapes))
    out["sizes"] = dict(Counter(s.size for s in scene.shapes))
    out["word"] = scene.word
    return out


def clip_attributes(clip: Clip) -> dict[str, Any]:
    """Ground-truth attributes of a clip, in the dict shape of :func:`caption_attributes`."""
    out = _empty_attributes()
    out.update(
        sound=clip.kind,
        pitch=clip.pitch,
        timbre=clip.timbre,
        beeps=clip.count,
        direction=clip.direction,
    )
    return out


def caption_attributes(text: str) -> dict[str, Any]:
    """Parse a caption into {count, shapes, colors, sizes, word, sound, pitch, timbre, beeps,
    direction}. Shapes/colours/sizes are {name: how many}; a number before "shapes" sets count,
    otherwise count is the number of shapes mentioned (None if none). "square" directly before a
    sound word ("a low square tone") is a timbre, not a shape. Sound fields stay None unless a
    sound word (tone, beep, chirp, sweep, noise) appears."""
    tokens = re.findall(r"[a-z]+|\d+", text.lower())
    out = _empty_attributes()
    shapes: Counter[str] = Counter()
    colors: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    num: int | None = None
    color: str | None = None
    size: str | None = None
    total: int | None = None
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in ("square", "squares") and (nxt in _SOUND_HEADS or nxt == "wave"):
            continue  # a timbre
        if tok in _SHAPE_HEADS or tok in _TOTAL_HEADS or tok in _SOUND_HEADS:
            if tok in _SHAPE_HEADS:
                n = 1 if num is None else num
                shapes[_SHAPE_HEADS[tok]] += n
                if color is not None:
                    colors[color] += n
                if size is not None:
                    sizes[size] += n
            elif tok in _TOTAL_HEADS:
                total = num if num is not None else total
            else:
                out["sound"] = out["sound"] or _SOUND_HEADS[tok]
                if _SOUND_HEADS[tok] == "beeps" and out["beeps"] is None:
                    out["beeps"] = num if num is not None else (1 if tok == "beep" else None)
            num, color, size = None, None, None
        elif tok in _NUMBERS or tok.isdigit():  # a number starts a new noun phrase
            num, color, size = int(tok) if tok.isdigit() else _NUMBERS[tok], None, None
        elif tok in COLORS:
            color = tok
        elif tok in _SIZE_WORDS:
            size = _SIZE_WORDS[tok]
        elif tok not in _MODIFIERS:
            num, color, size = None, None, None
        if tok == "word" and nxt:
            out["word"] = nxt
    if shapes or total is not None:
        out["count"] = total if total is not None else sum(shapes.values())
    out["shapes"], out["colors"], out["sizes"] = dict(shapes), dict(colors), dict(sizes)
    if out["sound"] is not None:
        for i, tok in enumerate(tokens):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if out["pitch"] is None and tok in _PITCH_WORDS:
                out["pitch"] = _PITCH_WORDS[tok]
            if out["direction"] is None and tok in _DIRECTION_WORDS:
                out["direction"] = _DIRECTION_WORDS[tok]
            is_timbre = tok != "square" or nxt in _SOUND_HEADS or nxt == "wave"
            if out["timbre"] is None and tok in _TIMBRE_WORDS and is_timbre:
                out["timbre"] = _TIMBRE_WORDS[tok]
    return out


# ---------------------------------------------------------------- templates

_COLOR_RE = "|".join(COLORS)
_KIND_RE = "|".join(KINDS)
_REF_RE = f"(?:(?:small|large) )?(?:(?:{_COLOR_RE}) )?(?:{_KIND_RE}|object)"
_SLOT_RE = {
    "ref": _REF_RE,
    "ref2": _REF_RE,
    "color": f"(?:{_COLOR_RE})",
    "kind": f"(?:{_KIND_RE})",
    "a_color": f"(?:an? (?:{_COLOR_RE}))",
    "kinds": "(?:{})".format("|".join(plural(k) for k in KINDS)),
    "dir": "(?:{})".format("|".join(DIRECTIONS)),
}


def _template_regex(template: str) -> re.Pattern[str]:
    """Regex for a template; every slot becomes a named group restricted to its vocabulary."""
    parts = re.split(r"\{(\w+)\}", template)  # text, slot, text, slot, ...
    body = "".join(
        re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_SLOT_RE[p]})" for i, p in enumerate(parts)
    )
    return re.compile(body)


_TEMPLATE_RES = [
    (key, i, _template_regex(t)) for key, ts in TEMPLATES.items() for i, t in enumerate(ts)
]


def match_template(question: str) -> list[tuple[str, int, dict[str, str]]]:
    """Every (template key, template index, slot values) that could have produced ``question``.

    For questions this module generates the list has exactly one entry.
    """
    out = []
    for key, i, rx in _TEMPLATE_RES:
        m = rx.fullmatch(question)
        if m is not None:
            out.append((key, i, m.groupdict()))
    return out


# ---------------------------------------------------------------- question builders


def _question_weights(changes: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each VQA task's question-key weights: the defaults with ``changes`` applied."""
    known = {key for weights in QUESTION_WEIGHTS.values() for key in weights}
    bad = {k: v for k, v in changes.items() if k not in known or not 0 <= v < float("inf")}
    if bad:
        raise InputError(
            f"question weights {bad}: each key must be one of {sorted(known)} with a weight >= 0"
        )
    out = {}
    for task, weights in QUESTION_WEIGHTS.items():
        out[task] = {k: float(changes.get(k, w)) for k, w in weights.items()}
        if sum(out[task].values()) <= 0:
            raise InputError(f"question weights {changes}: every {task} question weighs 0")
    return out


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _both_question(
    key: str, scene: Scene, rng: np.random.Generator
) -> tuple[Clip, Fields, str] | None:
    """A clip made for audio-visual question ``key`` on ``scene``, fields and answer (or None)."""
    answer = pick(rng, YES_NO)
    if key == "compare":
        n = len(scene.shapes)
        beeps = n if answer == "yes" else pick(rng, [b for b in range(1, MAX_BEEPS + 1) if b != n])
        return sample_clip(rng, kind="beeps", count=beeps), {}, answer
    if key == "more":
        counts = Counter(s.kind for s in scene.shapes)
        if answer == "yes":  # beeps > count(kind)
            kind = pick(rng, sorted(counts)) if rng.random() < 0.7 else pick(rng, KINDS)
            beeps = int(rng.integers(counts[kind] + 1, MAX_BEEPS + 1))
        else:  # 1 <= beeps <= count(kind)
            kind = pick(rng, sorted(counts))
            beeps = int(rng.integers(1, counts[kind] + 1))
        return sample_clip(rng, kind="beeps", count=beeps), {"kinds": plural(kind)}, answer
    if key == "match":
        colors = Counter(s.color for s in scene.shapes)
        unique = [s for s in scene.shapes if colors[s.color] == 1]
        if not unique:
            return None
        shape = pick(rng, unique)
        clip = sample_clip(rng, kind="chirp")
        kind, direction = shape.kind, str(clip.direction)
        if answer == "no":
            wrong = int(rng.integers(3))  # 0: wrong kind, 1: wrong direction, 2: both wrong
            if wrong != 1:
                kind = pick(rng, [k for k in KINDS if k != shape.kind])
            if wrong != 0:
                direction = next(d for d in DIRECTIONS if d != direction)
        return clip, {"color": shape.color, "kind": kind, "dir": direction}, answer
    raise KeyError(key)


# ---------------------------------------------------------------- the world


class SyntheticWorld:
    """Random-access synthetic examples, deterministic in (split, seed, index).

    ``task_mix`` weighs the five tasks ``image_vqa``, ``audio_vqa``, ``both_vqa``,
    ``image_caption``, ``audio_caption`` (default :data:`DEFAULT_TASK_MIX`; missing keys weigh 0).
    ``question_weights`` replaces the default weights of some question keys (those of
    :data:`QUESTION_WEIGHTS`) within their task, e.g. ``{"position_x": 1.0, "color": 2.0}``.
    ``length`` only sets ``len()`` for samplers (default: effectively infinite); any index in
    [0, length) can be read, negative ones count from ``length``.
    """

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        image_size: int = 128,
        task_mix: dict[str, float] | None = None,
        length: int = 1 << 40,
        question_weights: dict[str, float] | None = None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise InputError(f"split {split!r} is not one of {SPLITS}")
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        if image_size < 16:
            raise InputError(f"image_size must be >= 16 pixels, got {image_size}")
        mix = dict(DEFAULT_TASK_MIX if task_mix is None else task_mix)
        unknown = set(mix) - set(DEFAULT_TASK_MIX)
        if unknown or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise InputError(
                f"task_mix {mix} must give non-negative weights, not all 0, to keys of "
                f"{sorted(DEFAULT_TASK_MIX)}"
            )
        self.split, self.seed, self.image_size, self.length = split, seed, image_size, length
        self.task_mix = {k: float(v) for k, v in mix.items() if v > 0}
        self.questions = _question_weights(question_weights or {})

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator behind example ``index`` (seeded from salt, split, seed and index)."""
        return np.random.default_rng([_SALT, _SPLIT_IDS[self.split], self.seed, index])

    def _question(self, key: str, rng: np.random.Generator, fields: Fields) -> str:
        templates = TEMPLATES[key]
        if self.split == "heldout-paraphrase":
            template = templates[-1]
        else:
            template = templates[int(rng.integers(len(templates) - 1))]
        return template.format(**fields)

    def __getitem__(self, index: int) -> Example:
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside [0, {self.length})")
        rng = self.rng(index)
        task = _weighted(rng, self.task_mix)
        size = self.image_size
        if task == "image_caption":
            scene = sample_scene(rng)
            image = render_scene(scene, rng, size)
            target = scene_caption(scene, rng)
            return Example(
                image,
                None,
                "caption",
                IMAGE_CAPTION_PROMPT,
                target,
                "image",
                "caption",
                scene=scene,
                clip=None,
            )
        if task == "audio_caption":
            clip = sample_clip(rng)
            audio = synthesize(clip, rng)
            target = clip_caption(clip, rng)
            return Example(
                None,
                audio,
                "caption",
                AUDIO_CAPTION_PROMPT,
                target,
                "audio",
                "caption",
                scene=None,
                clip=clip,
            )
        if task == "image_vqa":
            key = _weighted(rng, self.questions["image_vqa"])
            for _ in range(_MAX_REDRAWS):  # a scene that makes the question ambiguous is redrawn
                scene = sample_scene(rng, word=True if key == "text" else None)
                built = scene_question(key, scene, rng)
                if built is not None:
                    break
            else:
                raise RuntimeError(f"no unambiguous {key!r} question in {_MAX_REDRAWS} scenes")
            fields, answer = built
            question = self._question(key, rng, fields)
            image = render_scene(scene, rng, size)
            clip, audio = None, None
            if rng.random() < DISTRACTOR_P:
                clip = sample_clip(rng)
                audio = synthesize(clip, rng)
            named = question_referents(key, fields, scene)
            return Example(
                image,
                audio,
                "vqa",
                question,
                answer,
                "image",
                QTYPE[key],
                scene=scene,
                clip=clip,
                referents=named,
            )
        if task == "audio_vqa":
            key = _weighted(rng, self.questions["audio_vqa"])
            clip, fields, answer = clip_question(key, rng)
            question = self._question(key, rng, fields)
            audio = synthesize(clip, rng)
            scene, image = None, None
            if rng.random() < DISTRACTOR_P:
                scene = sample_scene(rng)
                image = render_scene(scene, rng, size)
            return Example(
                image, audio, "vqa", question, answer, "audio", QTYPE[key], scene=scene, clip=clip
            )
        key = _weighted(rng, self.questions["both_vqa"])
        for _ in range(_MAX_REDRAWS):
            scene = sample_scene(rng)
            both = _both_question(key, scene, rng)
            if both is not None:
                break
        else:
            raise RuntimeError(f"no unambiguous {key!r} question in {_MAX_REDRAWS} scenes")
        clip, fields, answer = both
        question = self._question(key, rng, fields)
        image = render_scene(scene, rng, size)
        audio = synthesize(clip, rng)
        return Example(
            image, audio, "vqa", question, answer, "both", QTYPE[key], scene=scene, clip=clip
        )


def export_jsonl(
    out_dir: str | Path, n: int, seed: int = 0, split: str = "train", image_size: int = 128
) -> Path:
    """Write ``n`` examples as ``out_dir/data.jsonl`` (DESIGN format) plus ``img/*.png`` and
    ``clips/*.wav`` (16-bit PCM); media paths are relative to the JSONL. Returns the JSONL path.

    Media files are written before the JSONL, which appears atomically (temp file, then rename).
    """
    import soundfile as sf

    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    world = SyntheticWorld(split=split, seed=seed, image_size=image_size, length=max(n, 1))
    lines = []
    for i in range(n):
        ex = world[i]
        record: dict[str, Any] = {}
        if ex.image is not None:
            rel = f"img/{i:06d}.png"
            tmp = out / f"img/.{i:06d}.png.tmp"
            ex.image.save(tmp, format="PNG")
            os.replace(tmp, out / rel)
            record["image"] = rel
        if ex.audio is not None:
            rel = f"clips/{i:06d}.wav"
            tmp = out / f"clips/.{i:06d}.wav.tmp"
            sf.write(tmp, to_pcm16(ex.audio), SAMPLE_RATE, subtype="PCM_16", format="WAV")
            os.replace(tmp, out / rel)
            record["audio"] = rel
        record["task"] = ex.task
        if ex.task == "vqa":
            record["question"], record["answer"] = ex.prompt, ex.target
        else:
            record["caption"] = ex.target
        record["category"], record["qtype"] = ex.category, ex.qtype
        lines.append(json.dumps(record))
    path = out / "data.jsonl"
    tmp = out / ".data.jsonl.tmp"
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return path
