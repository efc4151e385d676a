"""The Tux Paint stamps export and its evaluation: a small stamps folder made here (pictures,
descriptions, a sound effect, a spoken description) goes through ``mmllm data tuxpaint``."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmllm.cli import main as cli_main
from mmllm.data.collate import Record
from mmllm.data.jsonl import read_jsonl
from mmllm.data.tuxpaint import Stamp, export_tuxpaint, find_stamps, main_noun, mentions
from mmllm.errors import DataError
from mmllm.eval.metrics import noun_mention_scores

DESCRIPTIONS = {
    "animals/chimp": "A chimpanzee.",
    "animals/cow": "A brown cow with a bell",
    "food/jeans": "A pair of blue jeans with patches.",
    "food/apple": "An apple.",
}


@pytest.fixture(scope="module")
def stamps(tmp_path_factory):
    """Four stamps: RGBA pictures; the cow moos (8 s at 22.05 kHz stereo, cut to 10 s max) and
    the chimp has a spoken description."""
    root = tmp_path_factory.mktemp("stamps")
    rng = np.random.default_rng(0)
    for key, text in DESCRIPTIONS.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)
        Image.fromarray(pixels, "RGBA").save(path.with_suffix(".png"))
        path.with_suffix(".txt").write_text(f"{text}\nfr.utf8=Une traduction.\n")
    moo = 0.1 * rng.standard_normal((8 * 22050, 2)).astype(np.float32)
    sf.write(root / "animals/cow.ogg", moo, 22050)
    sf.write(root / "animals/chimp_desc.ogg", moo[:22050, 0], 22050)
    (root / "food/orphan.txt").write_text("A description without a picture.\n")
    return root


def all_records(folder):
    """Both splits' records (a split with no stamps is an empty file)."""
    files = [folder / "train.jsonl", folder / "heldout.jsonl"]
    return [r for f in files if f.read_text().strip() for r in read_jsonl(f)]


def test_stamps_are_found_with_their_sounds_and_spoken_descriptions(stamps):
    found = {s.key: s for s in find_stamps(stamps)}
    assert sorted(found) == sorted(DESCRIPTIONS)  # the stamp without a picture is skipped
    assert found["animals/cow"].description == "A brown cow with a bell."  # full stop added
    assert found["animals/cow"].sound is not None and found["animals/cow"].spoken is None
    assert found["animals/chimp"].spoken is not None and found["animals/chimp"].sound is None


def test_export_writes_loadable_records_for_every_stamp_and_medium(stamps, tmp_path):
    counts = export_tuxpaint(stamps, tmp_path, espeak=False)
    records = all_records(tmp_path)
    assert counts["train"] + counts["heldout"] == len(records) == 4 + 1 + 1
    by_category = {}
    for r in records:
        by_category.setdefault(r.category, []).append(r)
    assert {k: len(v) for k, v in by_category.items()} == {
        "stamp_image": 4,
        "stamp_sound": 1,
        "stamp_speech": 1,
    }
    picture = Image.open(by_category["stamp_image"][0].images[0])
    assert picture.mode == "RGB"  # alpha composited on white
    clip, rate = sf.read(by_category["stamp_sound"][0].audio[0])
    assert (rate, clip.ndim, round(len(clip) / rate, 1)) == (16000, 1, 8.0)
    speech = by_category["stamp_speech"][0]
    assert (speech.prompt, speech.target) == ("what does the voice say?", "A chimpanzee.")


def test_each_sound_effect_is_cut_in_time_into_a_seen_and_a_held_out_part(stamps, tmp_path):
    export_tuxpaint(stamps, tmp_path, espeak=False)
    seen, unseen = (read_jsonl(tmp_path / f"sounds_{s}.jsonl") for s in ("train", "heldout"))
    assert len(seen) == len(unseen) == 1  # the cow: a source in both, unlike the stamp split
    assert seen[0].category == unseen[0].category == "stamp_sound_seen"
    assert seen[0].target == unseen[0].target == "A brown cow with a bell."
    first, rate = sf.read(seen[0].audio[0])
    rest, _ = sf.read(unseen[0].audio[0])
    assert rate == 16000 and len(first) + len(rest) == 8 * 16000
    assert len(first) == round(0.6 * 8 * 16000)  # SEEN_TRAIN_SHARE of it, then the rest
    sound = next(r for r in all_records(tmp_path) if r.category == "stamp_sound")
    np.testing.assert_array_equal(np.concatenate([first, rest]), sf.read(sound.audio[0])[0])


def word(i: int) -> str:
    return "".join(chr(97 + (i // 26**k) % 26) for k in range(3)) + "x"


def test_held_out_stamps_are_a_fixed_fifth_chosen_by_their_noun():
    stamps = [Stamp(f"animals/s{i}", f"A {word(i)}.", None, None, None) for i in range(2000)]
    share = sum(s.heldout for s in stamps) / len(stamps)
    assert 0.17 < share < 0.23
    # the same thing under another name or description lands on the same side
    assert [s.heldout for s in stamps[:100]] == [
        Stamp(f"other/{i}", f"The big {word(i)} with a hat.", None, None, None).heldout
        for i in range(100)
    ]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_espeak_speaks_every_description(stamps, tmp_path):
    export_tuxpaint(stamps, tmp_path, espeak=True)
    records = all_records(tmp_path)
    spoken = [r for r in records if r.category == "stamp_speech"]
    assert len(spoken) == 1 + 3 * len(DESCRIPTIONS)
    clip, rate = sf.read(spoken[-1].audio[0])
    assert rate == 16000 and 0.3 < len(clip) / rate < 10 and np.abs(clip).max() > 0.01


def test_missing_stamps_folder_names_the_install_command(tmp_path, capsys):
    with pytest.raises(DataError, match="apt-get install tuxpaint-stamps-default"):
        find_stamps(tmp_path / "nowhere")
    assert cli_main(["data", "tuxpaint", "--stamps", str(tmp_path / "no"), "--out", "x"]) != 0
    assert "tuxpaint-stamps-default" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("description", "noun"),
    [
        ("A chimpanzee.", "chimpanzee"),
        ("A pair of blue jeans with patches.", "jeans"),
        ("A spider dancing with a fly.", "spider"),
        ("A US 10 cent piece ($.10) called a dime.", "piece"),
        ("The letter O.", "letter"),
        ("Teddy bear.", "bear"),
        ("A Christmas stocking.", "stocking"),
    ],
)
def test_main_noun(description, noun):
    assert main_noun(description) == noun


def test_noun_mentions_count_words_and_plurals_only():
    assert mentions("Two brown cows in a field.", "cow")
    assert mentions("A Cow.", "cow")
    assert mentions("some jeans", "jeans")
    assert not mentions("A cowboy hat.", "cow")
    records = [
        Record("describe the image:", "A cow.", category="stamp_image"),
        Record("describe the image:", "A chimpanzee.", category="stamp_image"),
        Record("describe the sound:", "A drum kit.", category="stamp_sound"),
        Record("q", "a", category="image"),
    ]
    scores = noun_mention_scores(records, ["a cow", "a monkey", "drums and a kit", "x"])
    assert json.loads(json.dumps(scores)) == {
        "noun/stamp_image": {"accuracy": 0.5, "n": 2},
        "noun/stamp_sound": {"accuracy": 1.0, "n": 1},
    }


def test_unreadable_files_are_skipped_and_counted(stamps, tmp_path):
    broken = tmp_path / "stamps"
    shutil.copytree(stamps, broken)
    (broken / "food/apple.png").write_bytes(b"not a png")
    (broken / "animals/cow.ogg").write_bytes(b"OggS broken")
    counts = export_tuxpaint(broken, tmp_path / "out", espeak=False)
    assert (counts["skipped_pictures"], counts["skipped_clips"]) == (1, 1)
    records = all_records(tmp_path / "out")
    assert len(records) == 3 + 0 + 1  # three pictures, no sound effect, one spoken description


SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
    '<circle cx="20" cy="15" r="10" fill="red"/></svg>'
)


@pytest.fixture
def stamps_with_svg(stamps, tmp_path):
    """The four stamps and a fifth whose picture is SVG only."""
    root = tmp_path / "stamps"
    shutil.copytree(stamps, root)
    (root / "food/ball.svg").write_text(SVG)
    (root / "food/ball.txt").write_text("A red ball.\n")
    return root


def test_svg_pictures_without_a_renderer_are_refused_unless_skipped(
    stamps_with_svg, tmp_path, monkeypatch, capsys
):
    import mmllm.data.tuxpaint as tuxpaint

    monkeypatch.setattr(tuxpaint, "_svg_renderer_missing", lambda: "ImportError: no cairosvg")
    with pytest.raises(DataError, match=r"1 of the 5 stamps.*pip install cairosvg.*--no-svg"):
        export_tuxpaint(stamps_with_svg, tmp_path / "out", espeak=False)
    assert not (tmp_path / "out" / "train.jsonl").exists()
    args = ["data", "tuxpaint", "--stamps", str(stamps_with_svg), "--no-espeak"]
    assert cli_main([*args, "--out", str(tmp_path / "x")]) != 0
    assert "pip install cairosvg" in capsys.readouterr().err
    assert cli_main([*args, "--no-svg", "--out", str(tmp_path / "out")]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["skipped_pictures"] == 1
    assert len(all_records(tmp_path / "out")) == 4 + 1 + 1  # the PNG stamps' records alone


def test_missing_espeak_is_refused_unless_its_voices_are_skipped(stamps, tmp_path, monkeypatch):
    import mmllm.data.tuxpaint as tuxpaint

    monkeypatch.setattr(tuxpaint.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match=r"apt-get install espeak-ng.*--no-espeak"):
        export_tuxpaint(stamps, tmp_path, espeak=True)
    counts = export_tuxpaint(stamps, tmp_path, espeak=False)
    assert counts["train"] + counts["heldout"] == 4 + 1 + 1


def test_svg_pictures_are_rendered_on_white(stamps_with_svg, tmp_path):
    from mmllm.data.tuxpaint import _svg_renderer_missing

    if _svg_renderer_missing():
        pytest.skip("needs cairosvg (pip install cairosvg) and the cairo library")
    counts = export_tuxpaint(stamps_with_svg, tmp_path, espeak=False)
    assert counts["skipped_pictures"] == 0
    ball = [r for r in all_records(tmp_path) if r.target == "A red ball."]
    assert len(ball) == 1
    pixels = np.asarray(Image.open(ball[0].images[0]))
    assert pixels.shape[2] == 3 and pixels.shape[1] == 256  # longest side 256
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # the transparent corner: white
    assert tuple(pixels[pixels.shape[0] // 2, 128]) == (255, 0, 0)  # the circle: red


def test_imagenet_oracle_matches_class_names_to_nouns(tmp_path):
    import torch
    from torchvision.models import mobilenet_v2

    from scripts.probes.imagenet_oracle import names_noun, oracle

    assert names_noun("king penguin", "penguin") and names_noun("crane bird", "crane")
    assert names_noun("tree frog", "frogs") and not names_noun("comic book", "friends")
    torch.manual_seed(0)
    torch.save(mobilenet_v2().state_dict(), tmp_path / "mnv2.pth")
    Image.new("RGB", (40, 30), "white").save(tmp_path / "a.png")
    records = [
        Record("describe the image:", "A frog.", images=[tmp_path / "a.png"], task="caption",
               category="stamp_image"),
        Record("describe the sound:", "A frog.", audio=[tmp_path / "a.wav"], task="caption",
               category="stamp_sound"),  # not a picture
    ]  # fmt: skip
    scores = oracle(records, tmp_path / "mnv2.pth")
    assert scores["n"] == 1 and 0 <= scores["top1"] <= scores["top5"] <= 1
    assert scores["examples"][0]["noun"] == "frog" and len(scores["examples"][0]["classes"]) == 5
