"""Synthetic images: scene graphs of coloured shapes, their rendering, captions and questions.

Part of the built-in synthetic world (DESIGN.md, "The synthetic world"). A :class:`Scene` is a
small scene graph (1-4 shapes, a background, an optional word); :func:`sample_scene` draws one from
a numpy ``Generator``, :func:`render_scene` turns it into an RGB image (:func:`label_map` says
which shape each pixel shows), :func:`scene_caption` and :func:`scene_question` put it into
words. Everything is sized to stay legible after downscaling to 64x64 (large shapes are about
twice the small ones, six well-separated colours, light backgrounds that are never a shape colour).
Rendering uses only integer drawing and PIL's built-in bitmap font (upscaled with nearest
neighbour), so the pixels are the same on every machine.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 155, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 200, 15),
    "purple": (135, 55, 185),
    "orange": (245, 130, 20),
}
KINDS = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
BACKGROUNDS = ("plain", "noisy", "gradient")
# Short words to render; none collides with a colour, shape, size, number or sound word.
WORDS = (
    "cat",
    "dog",
    "sun",
    "box",
    "fox",
    "hat",
    "map",
    "zoo",
    "hi",
    "go",
    "bus",
    "cake",
    "fish",
    "moon",
    "tree",
    "ship",
)
RADIUS = {"small": 0.095, "large": 0.17}  # fraction of the image side
YES_NO = ("yes", "no")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_MARGIN = 0.02  # edge and inter-shape clearance, fraction of the image side
_CHAR_W = 0.14  # rendered word: width per letter and cap height, fraction of the image side
_CAP_H = 0.14


Fields = dict[str, str]  # template slot -> value, e.g. {"ref": "large red circle"}


def pick(rng: np.random.Generator, items: list[Any] | tuple[Any, ...]) -> Any:
    """One of ``items``, uniformly."""
    return items[int(rng.integers(len(items)))]


@dataclass(frozen=True)
class Shape:
    """One shape: ``kind`` in KINDS, ``color`` in COLORS, ``size`` in SIZES, centre (x, y) in
    [0, 1] (y grows downwards)."""

    kind: str
    color: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    """A scene graph: shapes sorted left to right, background kind, optional rendered word.

    ``word_pos`` is the word's centre (x, y) in [0, 1], set whenever ``word`` is.
    """

    shapes: tuple[Shape, ...]
    background: str
    word: str | None
    word_pos: tuple[float, float] | None = None


def plural(kind: str) -> str:
    """Plural of a shape kind ("cross" -> "crosses")."""
    return kind + "es" if kind.endswith("s") else kind + "s"


def _word_box(word: str, pos: tuple[float, float]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a rendered word in [0, 1] coordinates."""
    half_w, half_h = len(word) * _CHAR_W / 2, _CAP_H / 2
    return pos[0] - half_w, pos[1] - half_h, pos[0] + half_w, pos[1] + half_h


def _clear_of_box(x: float, y: float, r: float, box: tuple[float, float, float, float]) -> bool:
    """True if the disc (x, y, r) keeps _MARGIN away from the rectangle ``box``."""
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return math.hypot(dx, dy) > r + _MARGIN


def _place(
    rng: np.random.Generator,
    r: float,
    placed: list[tuple[float, float, float]],
    box: tuple[float, float, float, float] | None,
    tries: int = 40,
) -> tuple[float, float] | None:
    """A centre for a disc of radius ``r`` clear of the edges, the placed discs and the word box."""
    lo, hi = r + _MARGIN, 1.0 - r - _MARGIN
    for _ in range(tries):
        x, y = (round(float(v), 3) for v in rng.uniform(lo, hi, size=2))
        if box is not None and not _clear_of_box(x, y, r, box):
            continue
        if all(math.hypot(x - px, y - py) > r + pr + _MARGIN for px, py, pr in placed):
            return x, y
    return None


def sample_scene(
    rng: np.random.Generator, n_shapes: int | None = None, word: bool | None = None
) -> Scene:
    """Draw a scene: ``n_shapes`` (default 1-4 uniform) shapes, a word if ``word`` (default 20%).

    Shapes that cannot be placed without overlap are first shrunk to small, then dropped, so the
    scene may hold fewer shapes than asked (never zero).
    """
    n = int(rng.integers(1, 5)) if n_shapes is None else n_shapes
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    has_word = bool(rng.random() < 0.2) if word is None else word
    text, pos, box = None, None, None
    if has_word:
        text = WORDS[int(rng.integers(len(WORDS)))]
        half_w = len(text) * _CHAR_W / 2
        pos = (
            round(float(rng.uniform(half_w + 0.04, 1 - half_w - 0.04)), 3),
            round(float(rng.choice([0.14, 0.86])), 3),  # top or bottom band
        )
        box = _word_box(text, pos)
    shapes: list[Shape] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        size = SIZES[int(rng.integers(2))]
        xy = _place(rng, RADIUS[size], placed, box)
        if xy is None and size == "large":
            size = "small"
            xy = _place(rng, RADIUS[size], placed, box)
        if xy is None:
            continue
        placed.append((xy[0], xy[1], RADIUS[size]))
        shapes.append(Shape(kind, color, size, xy[0], xy[1]))
    if not shapes:  # cannot happen for the first shape on an empty canvas; kept as a guard
        shapes.append(Shape("circle", "red", "small", 0.5, 0.5))
    shapes.sort(key=lambda s: (s.x, s.y))
    return Scene(tuple(shapes), background, text, pos)


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """Light background (size, size, 3) uint8: pale, low-saturation, never a shape colour."""
    base = int(rng.integers(212, 238))
    tint = rng.integers(-8, 9, size=3)
    c0 = np.clip(base + tint, 200, 245)
    if kind == "gradient":
        c1 = np.clip(int(rng.integers(212, 238)) + rng.integers(-8, 9, size=3) - 18, 190, 245)
        ramp = np.arange(size, dtype=np.int32)
        direction = int(rng.integers(3))
        if direction == 0:
            t = np.broadcast_to(ramp[None, :], (size, size))
        elif direction == 1:
            t = np.broadcast_to(ramp[:, None], (size, size))
        else:
            t = (ramp[None, :] + ramp[:, None]) // 2
        grad = c0[None, None, :] * (size - 1 - t[..., None]) + c1[None, None, :] * t[..., None]
        return (grad // max(size - 1, 1)).astype(np.uint8)
    arr = np.broadcast_to(c0.astype(np.int16), (size, size, 3))
    if kind == "noisy":
        arr = arr + rng.integers(-14, 15, size=(size, size, 3), dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _polygon(cx: float, cy: float, r: float, kind: str) -> list[tuple[float, float]]:
    """Vertices of a triangle, star or cross centred at (cx, cy) with outer radius ~``r``."""
    if kind == "triangle":  # equilateral, pointing up, nudged down so it looks centred
        return [
            (cx + 1.12 * r * math.cos(a), cy + 0.15 * r + 1.12 * r * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if kind == "star":
        pts = []
        for i in range(10):
            rad = 1.08 * r if i % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if kind == "cross":
        a, b = 0.95 * r, 0.33 * r
        rel = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
        return [(cx + dx, cy + dy) for dx, dy in rel]
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")


@functools.lru_cache(maxsize=256)
def _word_mask(word: str, scale: int) -> np.ndarray:
    """Boolean mask (H, W) of ``word`` in upper case, PIL's bitmap font upscaled ``scale`` times."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    font = loader() if loader is not None else ImageFont.load_default()
    text = word.upper()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(canvas).text((-left, -top), text, fill=255, font=font)
    mask = np.asarray(canvas) > 0
    rows = np.flatnonzero(mask.any(axis=1))
    mask = mask[rows[0] : rows[-1] + 1] if rows.size else mask
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, size: int, fill: Any) -> None:
    """Draw ``shape`` filled with ``fill`` on a canvas of side ``size`` pixels."""
    cx, cy, r = shape.x * size, shape.y * size, RADIUS[shape.size] * size
    if shape.kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape.kind == "square":
        h = 0.86 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    else:
        draw.polygon(_polygon(cx, cy, r, shape.kind), fill=fill)


def _word_pixels(scene: Scene, size: int) -> tuple[np.ndarray, int, int] | None:
    """The rendered word's boolean mask and its top-left corner (y0, x0) on a ``size`` canvas,
    clipped to the canvas; None without a word."""
    if scene.word is None or scene.word_pos is None:
        return None
    scale = max(1, round(size * _CAP_H / 6))  # the bitmap font's capitals are 6 px tall
    mask = _word_mask(scene.word, scale)
    h, w = mask.shape
    x0 = min(max(round(scene.word_pos[0] * size - w / 2), 0), max(size - w, 0))
    y0 = min(max(round(scene.word_pos[1] * size - h / 2), 0), max(size - h, 0))
    return mask[: size - y0, : size - x0], y0, x0


def render_scene(scene: Scene, rng: np.random.Generator, image_size: int = 128) -> Image.Image:
    """Draw ``scene`` as an RGB image (image_size, image_size); colours are jittered by ``rng``."""
    size = image_size
    img = Image.fromarray(_background(rng, scene.background, size), mode="RGB")
    draw = ImageDraw.Draw(img)
    for shape in scene.shapes:
        jitter = rng.integers(-14, 15, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(COLORS[shape.color]) + jitter, 0, 255))
        _draw_shape(draw, shape, size, fill)
    word = _word_pixels(scene, size)
    if word is not None:
        mask, y0, x0 = word
        arr = np.array(img)
        arr[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = (20, 20, 20)
        img = Image.fromarray(arr, mode="RGB")
    return img


WORD_LABEL = 255  # label_map's value for the rendered word's pixels


def label_map(scene: Scene, image_size: int = 128) -> np.ndarray:
    """What each pixel of ``render_scene(scene, _, image_size)`` shows: ``(image_size,
    image_size)`` uint8, 0 background, ``i + 1`` shape ``scene.shapes[i]``, WORD_LABEL the word."""
    canvas = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    for i, shape in enumerate(scene.shapes):
        _draw_shape(draw, shape, image_size, i + 1)
    labels = np.array(canvas)
    word = _word_pixels(scene, image_size)
    if word is not None:
        mask, y0, x0 = word
        labels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = WORD_LABEL
    return labels


def _noun_phrase(count: int, shape: Shape) -> str:
    """Noun phrase such as "a small red circle" or "two large blue crosses"."""
    kind = shape.kind if count == 1 else plural(shape.kind)
    det = "a" if count == 1 else NUMBER_WORDS[count]
    return f"{det} {shape.size} {shape.color} {kind}"


def _join(parts: list[str]) -> str:
    """Join phrases as "x", "x and y" or "x, y and z"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming every shape's size, colour and kind (and the word), in varied phrasing."""
    shapes = scene.shapes
    n = len(shapes)
    groups: dict[tuple[str, str, str], list[Shape]] = {}
    for s in shapes:
        groups.setdefault((s.size, s.color, s.kind), []).append(s)
    listed = _join([_noun_phrase(len(g), g[0]) for g in groups.values()])
    noun = "shape" if n == 1 else "shapes"
    styles = ["list", "count", "there"]
    if n == 2 and len(groups) == 2:
        styles.append("relation")
    if 2 <= n == len(groups):
        styles.append("order")
    style = styles[int(rng.integers(len(styles)))]
    if style == "list":
        text = listed
    elif style == "count":
        text = f"{NUMBER_WORDS[n]} {noun}: {listed}"
    elif style == "there":
        text = f"there {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} {noun}: {listed}"
    elif style == "relation":
        a, b = shapes
        if abs(b.y - a.y) > abs(b.x - a.x):
            a, b = (a, b) if a.y < b.y else (b, a)
            text = f"{_noun_phrase(1, a)} above {_noun_phrase(1, b)}"
        else:
            text = f"{_noun_phrase(1, a)} left of {_noun_phrase(1, b)}"
    else:
        text = "from left to right: " + _join([_noun_phrase(1, s) for s in shapes])
    if scene.word is not None:
        if rng.random() < 0.5:
            text += f" and the word {scene.word}"
        else:
            text += f", with the word {scene.word} written"
    return text


def _refs(scene: Scene, shape: Shape, exclude: str = "") -> list[str]:
    """Phrases that pick out ``shape`` alone in ``scene`` without naming attribute ``exclude``."""
    out = []
    for use in (
        {"kind"},
        {"color"},
        {"size"},
        {"color", "kind"},
        {"size", "kind"},
        {"size", "color"},
        {"size", "color", "kind"},
    ):
        if exclude in use:
            continue
        same = [s for s in scene.shapes if all(getattr(s, a) == getattr(shape, a) for a in use)]
        if len(same) == 1:
            words = [shape.size] if "size" in use else []
            words += [shape.color] if "color" in use else []
            words += [shape.kind if "kind" in use else "object"]
            out.append(" ".join(words))
    return out


def named_shapes(ref: str, scene: Scene) -> set[int]:
    """Indices of ``scene``'s shapes that a phrase of ``_refs`` ("small red object", "star")
    fits."""
    words = ref.split()
    return {
        i
        for i, s in enumerate(scene.shapes)
        if all(w == "object" or w in (s.size, s.color, s.kind) for w in words)
    }


def question_referents(key: str, fields: Fields, scene: Scene) -> tuple[tuple[int, ...], ...]:
    """The shapes image question ``key`` (its template ``fields``) is about, as groups of
    ``scene.shapes`` indices: one group (the shape of ``ref``, those of the counted kind, for
    "is there a red star?" every red shape and every star, whatever the answer), or two for a
    relation (``ref``'s, then ``ref2``'s). ``()`` for questions about the whole image (count,
    text) or when nothing fits (a count of 0, a presence question sharing nothing)."""
    groups = [named_shapes(fields[f], scene) for f in ("ref", "ref2") if f in fields]
    if key == "count_kind":
        kind = {plural(k): k for k in KINDS}[fields["kinds"]]
        groups = [{i for i, s in enumerate(scene.shapes) if s.kind == kind}]
    if key == "presence":
        color = fields["a_color"].split()[-1]
        groups = [named_shapes(color, scene) | named_shapes(fields["kind"], scene)]
    return tuple(tuple(sorted(g)) for g in groups) if all(groups) else ()


def scene_question(key: str, scene: Scene, rng: np.random.Generator) -> tuple[Fields, str] | None:
    """Template fields and answer of question ``key`` about ``scene``; None if it would be
    ambiguous (then the caller draws another scene). Keys as in ``synthetic.TEMPLATES``."""
    shapes = scene.shapes
    if key in ("color", "shape", "size"):
        shape = pick(rng, shapes)
        refs = _refs(scene, shape, exclude={"color": "color", "shape": "kind", "size": "size"}[key])
        answer = {"color": shape.color, "shape": shape.kind, "size": shape.size}[key]
        return ({"ref": pick(rng, refs)}, answer) if refs else None
    if key == "count":
        return {}, str(len(shapes))
    if key == "count_kind":
        present = sorted({s.kind for s in shapes})
        kind = pick(rng, present) if rng.random() < 0.7 else pick(rng, KINDS)
        return {"kinds": plural(kind)}, str(sum(s.kind == kind for s in shapes))
    if key == "presence":
        have = {(s.color, s.kind) for s in shapes}
        if rng.random() < 0.5:
            color, kind = pick(rng, sorted(have))
            answer = "yes"
        else:
            color, kind = pick(rng, [(c, k) for c in COLORS for k in KINDS if (c, k) not in have])
            answer = "no"
        article = "an" if color[0] in "aeiou" else "a"
        return {"a_color": f"{article} {color}", "kind": kind}, answer
    if key in ("position_x", "position_y"):
        axis = key[-1]
        far = [s for s in shapes if abs(getattr(s, axis) - 0.5) >= 0.15 and _refs(scene, s)]
        if not far:
            return None
        shape = pick(rng, far)
        low = getattr(shape, axis) < 0.5
        answer = ("left" if low else "right") if axis == "x" else ("top" if low else "bottom")
        return {"ref": pick(rng, _refs(scene, shape))}, answer
    if key in ("relation_x", "relation_y"):
        axis = key[-1]
        pairs = [
            (a, b)
            for a in shapes
            for b in shapes
            if getattr(b, axis) - getattr(a, axis) >= 0.2 and _refs(scene, a) and _refs(scene, b)
        ]
        if not pairs:
            return None
        first, second = pick(rng, pairs)  # first is left of / above second
        answer = pick(rng, YES_NO)
        if answer == "no":
            first, second = second, first
        refs = {"ref": pick(rng, _refs(scene, first)), "ref2": pick(rng, _refs(scene, second))}
        return refs, answer
    if key == "text":
        return ({}, scene.word) if scene.word is not None else None
    raise KeyError(key)
