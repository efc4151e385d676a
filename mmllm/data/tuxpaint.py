"""The Tux Paint stamps corpus as JSONL: clip-art captions, sound effects and spoken descriptions.

Debian's ``tuxpaint-stamps-default`` (GPL-2; ``apt-get install tuxpaint-stamps-default``,
installed under ``/usr/share/tuxpaint/stamps``) holds ~950 stamps in category folders:
``NAME.png`` or ``NAME.svg`` (the picture), ``NAME.txt`` (a one-line English description on its
first line, e.g. ``A chimpanzee.``), and for some ``NAME.ogg`` (a sound effect) and
``NAME_desc.ogg`` (the description, spoken). With ``espeak-ng`` installed every description is
also spoken by synthetic voices; pictures that are SVG only are rendered by ``cairosvg``
(``pip install cairosvg``). ``mmllm data tuxpaint --out DIR`` writes

    DIR/train.jsonl, DIR/heldout.jsonl      records (paths relative to DIR)
    DIR/files/...                           the pictures (PNG on white), clips (WAV, 16 kHz)

Records: ``caption`` of the picture (the description); ``caption`` of the sound effect (the
description: what makes the sound); ``vqa`` "what does the voice say?" on the spoken clip (the
description). A fixed 20% of stamps (by a hash of the main noun, so the split never moves) are
held out with all of their records. Each record carries ``category`` (``stamp_image``,
``stamp_sound``, ``stamp_speech``); the evaluation looks for the description's main noun
(``main_noun``) in what the model generates. None of the corpus is stored in this repository.

The sound effects also get a *seen-source* split, for learning what makes a sound rather than
guessing an unseen noun: 124 distinct clips come from 134 stamps, only 4 of them shared, so a
split by clip cannot hold a source out and still have trained on it. Each clip is cut in time
instead: its first ``SEEN_TRAIN_SHARE`` goes to ``DIR/sounds_train.jsonl``, the rest to
``DIR/sounds_heldout.jsonl`` (category ``stamp_sound_seen``), whatever the stamp's split.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from encoders import AudioEncoderConfig
from mmllm.errors import AudioError, DataError
from mmllm.processing import AudioProcessor

DEFAULT_STAMPS = Path("/usr/share/tuxpaint/stamps")
SPEECH_QUESTION = "what does the voice say?"
HELDOUT_FRACTION = 0.2
ESPEAK_VOICES = ("en-us", "en+f3", "en-gb+m4")
SAMPLE_RATE = 16000
SEEN_TRAIN_SHARE = 0.6  # of each sound effect, in time: the seen-source split's training part
# nouns that end like a verb's -ing form (a "spider dancing" names a spider, a "stocking" itself)
ING_NOUNS = {
    "stocking", "ring", "string", "king", "wing", "swing", "building", "painting", "drawing",
    "ceiling", "earring", "spring", "sling", "pudding", "wedding", "icing", "clothing", "thing",
    "dumpling", "duckling", "sapling", "viking", "ping", "bowling", "sing", "wring",
}  # fmt: skip
# words after which a description stops naming its main thing ("A rat with a hat.")
_CUT = re.compile(
    r"\b(with|in|on|called|for|that|which|is|are|from|at|to|named|made|wearing|holding)\b|[,;:(]"
)


@dataclass
class Stamp:
    key: str  # path of the stamp inside the stamps folder, without extension
    description: str
    picture: Path | None
    sound: Path | None
    spoken: Path | None

    @property
    def heldout(self) -> bool:
        """Held out by a hash of the main noun, so stamps of one thing ("A fork.", two fork
        pictures; the 26 letters) are all on one side and no held-out noun is trained on."""
        digest = hashlib.sha256(main_noun(self.description).encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < HELDOUT_FRACTION


def main_noun(description: str) -> str:
    """The thing a description names: the last word (3+ letters) of its first phrase.

    "A chimpanzee." -> chimpanzee; "A pair of blue jeans with patches." -> jeans;
    "A spider dancing with a fly." -> spider; "A US 10 cent piece ($.10) called a dime." ->
    piece; "The letter O." -> letter.
    """
    first = description.split(".")[0]
    phrase = _CUT.split(first, maxsplit=1)[0]
    words = [w for w in re.findall(r"[a-z]+", phrase.lower()) if len(w) >= 3]
    verbs = [w for w in words if w.endswith("ing") and w not in ING_NOUNS]
    words = [w for w in words if w not in verbs] or words  # "a spider dancing"
    if not words:
        words = [w for w in re.findall(r"[a-z]+", first.lower()) if len(w) >= 3] or [""]
    return words[-1]


def mentions(text: str, noun: str) -> bool:
    """Whether ``text`` names ``noun`` as a word (singular or plural)."""
    if not noun:
        return False
    stem = noun[:-1] if noun.endswith("s") and len(noun) > 3 else noun
    return re.search(rf"\b{re.escape(stem)}(s|es)?\b", text.lower()) is not None


def find_stamps(root: Path) -> list[Stamp]:
    """Every stamp under ``root`` with a description and a picture, sorted by key."""
    if not root.is_dir():
        raise DataError(
            f"{root}: no Tux Paint stamps folder; install it with "
            "`apt-get install tuxpaint-stamps-default` or pass --stamps"
        )
    stamps = []
    for txt in sorted(root.rglob("*.txt")):
        base = txt.with_suffix("")
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        description = lines[0].strip() if lines else ""
        picture = next(
            (p for p in (base.with_suffix(".png"), base.with_suffix(".svg")) if p.is_file()), None
        )
        if not description or picture is None:
            continue
        if not description.endswith((".", "!", "?")):
            description += "."
        sound = base.with_suffix(".ogg")
        spoken = base.with_name(base.name + "_desc.ogg")
        stamps.append(
            Stamp(
                key=str(base.relative_to(root)),
                description=description,
                picture=picture,
                sound=sound if sound.is_file() else None,
                spoken=spoken if spoken.is_file() else None,
            )
        )
    return stamps


def _svg_renderer_missing() -> str | None:
    """Why SVG pictures cannot be rendered here (None: they can)."""
    try:
        import cairosvg  # noqa: F401
    except Exception as err:  # ImportError, or OSError when the cairo library itself is missing
        return f"{type(err).__name__}: {err}"
    return None


def _check_tools(stamps: list[Stamp], espeak: bool, svg: bool) -> None:
    """Refuse to export a corpus that silently differs from the documented one: SVG-only
    stamps without ``cairosvg``, spoken descriptions without ``espeak-ng``."""
    n_svg = sum(s.picture.suffix == ".svg" for s in stamps)
    missing = _svg_renderer_missing() if svg and n_svg else None
    if missing is not None:
        raise DataError(
            f"{n_svg} of the {len(stamps)} stamps' pictures are SVG and cannot be rendered "
            f"({missing}): `pip install cairosvg` (it needs the cairo library, Debian's "
            "libcairo2), or export without them (`mmllm data tuxpaint --no-svg`)"
        )
    if espeak and shutil.which("espeak-ng") is None:
        raise DataError(
            "espeak-ng is not installed: `apt-get install espeak-ng`, or export without the "
            "synthetic spoken descriptions (`mmllm data tuxpaint --no-espeak`)"
        )


def _picture_png(src: Path, dst: Path, size: int = 256) -> bool:
    """The stamp's picture on a white background, longest side ``size``; False if unreadable
    (SVG pictures need ``pip install cairosvg``; it refuses the few that use XML entities)."""
    from PIL import Image

    source: Path | io.BytesIO = src
    if src.suffix == ".svg":
        try:
            import cairosvg

            source = io.BytesIO(cairosvg.svg2png(url=str(src), output_width=size))
        except Exception:  # cairosvg's own errors on a stamp it cannot render (that it is
            # installed, export_tuxpaint has checked before the first stamp)
            return False
    try:
        with Image.open(source) as image:
            image = image.convert("RGBA")
            image.thumbnail((size, size))
            canvas = Image.new("RGB", image.size, "white")
            canvas.paste(image, mask=image.getchannel("A"))
            canvas.save(dst)
    except (OSError, ValueError, Image.DecompressionBombError):  # unreadable: skipped, counted
        return False
    return True


def _clip_wav(src: Path, dst: Path, max_seconds: float = 10.0) -> bool:
    """An audio file as mono 16 kHz WAV, cut to ``max_seconds``, by the library's own audio
    loader; False if it cannot be used (undecodable, empty, NaN...)."""
    import soundfile as sf

    loader = AudioProcessor(
        AudioEncoderConfig(sample_rate=SAMPLE_RATE, max_seconds=max_seconds),
        max_seconds=math.inf,
        truncate=True,
    )
    try:
        waveform = loader(src)
    except AudioError:
        return False
    sf.write(str(dst), waveform.numpy(), SAMPLE_RATE)
    return True


def _cut_in_time(clip: Path, first: Path, rest: Path, share: float = SEEN_TRAIN_SHARE) -> None:
    """A WAV clip cut at ``share`` of its length into ``first`` and ``rest``."""
    import soundfile as sf

    samples, rate = sf.read(str(clip), dtype="float32")
    cut = max(1, min(len(samples) - 1, round(share * len(samples))))
    sf.write(str(first), samples[:cut], rate)
    sf.write(str(rest), samples[cut:], rate)


def _speak(text: str, voice: str, dst: Path) -> bool:
    """``text`` spoken by espeak-ng's ``voice`` into ``dst`` (16 kHz WAV); False without it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    raw = dst.with_suffix(".raw.wav")
    done = subprocess.run([exe, "-v", voice, "-w", str(raw), text], capture_output=True)
    ok = done.returncode == 0 and raw.is_file() and _clip_wav(raw, dst)
    raw.unlink(missing_ok=True)
    return ok


def export_tuxpaint(root: Path, out: Path, espeak: bool = True, svg: bool = True) -> dict[str, int]:
    """Write ``out/train.jsonl`` and ``out/heldout.jsonl``, and the sound effects' seen-source
    split ``out/sounds_train.jsonl`` and ``out/sounds_heldout.jsonl`` (see the module doc);
    returns counts.
    ``espeak=False``: no synthetic spoken descriptions; ``svg=False``: SVG-only stamps' pictures
    skipped (counted in ``skipped_pictures``). With either on, its tool must be installed
    (``DataError`` naming the install command otherwise)."""
    stamps = find_stamps(root)
    _check_tools(stamps, espeak, svg)
    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {
        "train": [],
        "heldout": [],
        "sounds_train": [],
        "sounds_heldout": [],
    }
    skipped, skipped_clips = 0, 0
    for i, stamp in enumerate(tqdm(stamps, desc="stamps")):
        split = "heldout" if stamp.heldout else "train"
        name = f"{i:04d}"
        meta = {"id": stamp.key}
        picture = files / f"{name}.png"
        if (svg or stamp.picture.suffix != ".svg") and _picture_png(stamp.picture, picture):
            rows[split].append(
                {
                    "image": f"files/{picture.name}",
                    "task": "caption",
                    "caption": stamp.description,
                    "category": "stamp_image",
                    **meta,
                }
            )
        else:
            skipped += 1
        clip = files / f"{name}_sound.wav"
        sound_ok = stamp.sound is not None and _clip_wav(stamp.sound, clip)
        skipped_clips += stamp.sound is not None and not sound_ok
        if sound_ok:
            rows[split].append(
                {
                    "audio": f"files/{clip.name}",
                    "task": "caption",
                    "caption": stamp.description,
                    "category": "stamp_sound",
                    **meta,
                }
            )
            pieces = files / f"{name}_sound_seen.wav", files / f"{name}_sound_unseen.wav"
            _cut_in_time(clip, *pieces)
            for part, piece in zip(("sounds_train", "sounds_heldout"), pieces, strict=True):
                rows[part].append(
                    {
                        "audio": f"files/{piece.name}",
                        "task": "caption",
                        "caption": stamp.description,
                        "category": "stamp_sound_seen",
                        **meta,
                    }
                )
        spoken = []
        clip = files / f"{name}_desc.wav"
        if stamp.spoken is not None:
            if _clip_wav(stamp.spoken, clip):
                spoken.append(clip)
            else:
                skipped_clips += 1
        if espeak:
            for v, voice in enumerate(ESPEAK_VOICES):
                clip = files / f"{name}_say{v}.wav"
                if _speak(stamp.description, voice, clip):
                    spoken.append(clip)
        for clip in spoken:
            rows[split].append(
                {
                    "audio": f"files/{clip.name}",
                    "task": "vqa",
                    "question": SPEECH_QUESTION,
                    "answer": stamp.description,
                    "category": "stamp_speech",
                    **meta,
                }
            )
    counts = {}
    # train.jsonl last: its presence means the export is done
    for split in ("sounds_heldout", "sounds_train", "heldout", "train"):
        tmp = out / f"{split}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as handle:
            for record in rows[split]:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{split}.jsonl")
        counts[split] = len(rows[split])
    counts["stamps"] = len(stamps)
    counts["skipped_pictures"], counts["skipped_clips"] = skipped, skipped_clips
    return counts
