"""The built-in synthetic world: determinism, split hygiene, answers, captions, export."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmllm.data.synthetic import (
    ANSWERS,
    QTYPE,
    QUESTION_WEIGHTS,
    SAMPLE_RATE,
    TEMPLATES,
    Example,
    Scene,
    Shape,
    SyntheticWorld,
    caption_attributes,
    clip_attributes,
    export_jsonl,
    match_template,
    scene_attributes,
)
from mmllm.data.synthetic_image import KINDS, plural

SINGULAR = {plural(k): k for k in KINDS}
QTYPE_OF_IMAGE_KEYS = {QTYPE[k] for k in QUESTION_WEIGHTS["image_vqa"]}
VQA_ONLY = {"image_vqa": 0.45, "audio_vqa": 0.3, "both_vqa": 0.25}


def _sample(split: str, n: int, task_mix: dict[str, float] | None = None) -> list[Example]:
    world = SyntheticWorld(split=split, seed=0, image_size=64, task_mix=task_mix)
    return [world[i] for i in range(n)]


@pytest.fixture(scope="module")
def train_vqa() -> list[Example]:
    return _sample("train", 2000, VQA_ONLY)


@pytest.fixture(scope="module")
def paraphrase_vqa() -> list[Example]:
    return _sample("heldout-paraphrase", 2000, VQA_ONLY)


@pytest.fixture(scope="module")
def captions() -> list[Example]:
    return _sample("train", 500, {"image_caption": 0.6, "audio_caption": 0.4})


def _fingerprint(ex: Example) -> tuple:
    image = None if ex.image is None else ex.image.tobytes()
    audio = None if ex.audio is None else ex.audio.tobytes()
    return ex.task, ex.prompt, ex.target, ex.category, ex.qtype, image, audio


def _the(ref: str, scene: Scene) -> Shape:
    """The one shape that a reference such as "large red object" picks out."""
    *mods, noun = ref.split()
    found = [
        s
        for s in scene.shapes
        if noun in ("object", s.kind) and all(m in (s.size, s.color) for m in mods)
    ]
    assert len(found) == 1, f"{ref!r} is ambiguous or absent in {scene}"
    return found[0]


def _oracle(ex: Example) -> str:
    """The answer re-derived from the question text and the ground-truth scene / clip."""
    [(key, _, f)] = match_template(ex.prompt)
    scene, clip = ex.scene, ex.clip
    if ex.category in ("image", "both"):
        assert scene is not None
        shapes = scene.shapes
    if ex.category in ("audio", "both"):
        assert clip is not None
    yes_no = {True: "yes", False: "no"}
    if key in ("color", "shape", "size"):
        shape = _the(f["ref"], scene)
        return {"color": shape.color, "shape": shape.kind, "size": shape.size}[key]
    if key == "count":
        return str(len(shapes))
    if key == "count_kind":
        return str(sum(s.kind == SINGULAR[f["kinds"]] for s in shapes))
    if key == "presence":
        color = f["a_color"].split()[1]
        return yes_no[any(s.color == color and s.kind == f["kind"] for s in shapes)]
    if key in ("position_x", "position_y"):
        value = getattr(_the(f["ref"], scene), key[-1])
        assert abs(value - 0.5) >= 0.15, "position asked for a shape near the centre"
        low = value < 0.5
        return ("left" if low else "right") if key == "position_x" else ("top" if low else "bottom")
    if key in ("relation_x", "relation_y"):
        a, b = (getattr(_the(f[r], scene), key[-1]) for r in ("ref", "ref2"))
        assert abs(a - b) >= 0.2, "relation asked for shapes too close to call"
        return yes_no[a < b]
    if key == "text":
        return str(scene.word)
    if key in ("pitch", "timbre", "direction"):
        return str(getattr(clip, key))
    if key == "beeps":
        return str(clip.count)
    if key == "noise":
        return yes_no[clip.kind == "noise"]
    if key == "sound":
        return clip.kind
    if key == "compare":
        return yes_no[clip.count == len(shapes)]
    if key == "more":
        return yes_no[clip.count > sum(s.kind == SINGULAR[f["kinds"]] for s in shapes)]
    if key == "match":
        [shape] = [s for s in shapes if s.color == f["color"]]
        return yes_no[shape.kind == f["kind"] and clip.direction == f["dir"]]
    raise AssertionError(f"no oracle for {key}")


def test_same_split_seed_index_gives_identical_bytes() -> None:
    a, b = SyntheticWorld("heldout", seed=3), SyntheticWorld("heldout", seed=3)
    for i in range(40):
        assert _fingerprint(a[i]) == _fingerprint(b[i])


def test_indexes_far_past_a_million_are_readable() -> None:
    world = SyntheticWorld(image_size=64)
    assert _fingerprint(world[10**12]) == _fingerprint(SyntheticWorld(image_size=64)[10**12])


def test_other_seed_or_split_gives_other_examples() -> None:
    base = [_fingerprint(e) for e in _sample("train", 40)]
    for other in (SyntheticWorld("train", seed=1, image_size=64), SyntheticWorld("heldout", 0, 64)):
        assert all(_fingerprint(other[i]) != fp for i, fp in enumerate(base))


def test_train_and_heldout_never_share_scenes() -> None:
    mix = {"image_caption": 1.0}
    train = {e.scene for e in _sample("train", 1000, mix)}
    for split in ("heldout", "heldout-paraphrase"):
        assert not train & {e.scene for e in _sample(split, 1000, mix)}


def test_every_question_matches_exactly_one_template(train_vqa: list[Example]) -> None:
    for ex in train_vqa:
        assert len(match_template(ex.prompt)) == 1, ex.prompt


def test_every_key_has_training_and_held_out_templates() -> None:
    assert all(len(ts) >= 4 for ts in TEMPLATES.values())


def test_paraphrase_split_uses_only_templates_unseen_in_training(
    train_vqa: list[Example], paraphrase_vqa: list[Example]
) -> None:
    seen = {match_template(e.prompt)[0][:2] for e in train_vqa}
    held = {match_template(e.prompt)[0][:2] for e in paraphrase_vqa}
    assert held and not seen & held


def test_answers_agree_with_ground_truth(train_vqa: list[Example]) -> None:
    for ex in train_vqa:
        assert ex.target == _oracle(ex), (ex.prompt, ex.target, ex.scene, ex.clip)


def test_answers_are_in_the_qtype_vocabulary(train_vqa: list[Example]) -> None:
    for ex in train_vqa:
        assert ex.target in ANSWERS[ex.qtype], (ex.qtype, ex.target)


def test_every_qtype_is_generated(train_vqa: list[Example]) -> None:
    assert {e.qtype for e in train_vqa} == set(ANSWERS)


def test_yes_no_answers_are_balanced() -> None:
    examples = _sample("train", 3000, VQA_ONLY)
    by_qtype: dict[str, Counter[str]] = {}
    for ex in examples:
        if ex.target in ("yes", "no"):
            by_qtype.setdefault(ex.qtype, Counter())[ex.target] += 1
    assert set(by_qtype) == {"presence", "relation", "noise", "compare", "more", "match"}
    for qtype, counts in by_qtype.items():
        share = counts["yes"] / sum(counts.values())
        assert 0.4 <= share <= 0.6, (qtype, counts)


def test_captions_parse_back_to_ground_truth(captions: list[Example]) -> None:
    for ex in captions:
        truth = scene_attributes(ex.scene) if ex.category == "image" else clip_attributes(ex.clip)
        assert caption_attributes(ex.target) == truth, ex.target


def test_caption_attributes_reads_free_text() -> None:
    image = caption_attributes("Two red circles and a small blue square.")
    assert (image["count"], image["shapes"], image["colors"]) == (
        3,
        {"circle": 2, "square": 1},
        {"red": 2, "blue": 1},
    )
    audio = caption_attributes("a low square tone")
    assert (audio["sound"], audio["pitch"], audio["timbre"], audio["shapes"]) == (
        "tone",
        "low",
        "square",
        {},
    )


def test_single_modality_questions_sometimes_carry_other_media(train_vqa: list[Example]) -> None:
    single = [e for e in train_vqa if e.category != "both"]
    share = sum(e.image is not None and e.audio is not None for e in single) / len(single)
    assert 0.15 <= share <= 0.35


def test_images_are_rgb_at_requested_size() -> None:
    world = SyntheticWorld(image_size=96, task_mix={"image_caption": 1.0})
    for ex in (world[i] for i in range(10)):
        assert ex.image is not None and ex.image.mode == "RGB" and ex.image.size == (96, 96)


def test_audio_is_float32_mono_in_range_at_16k() -> None:
    assert SAMPLE_RATE == 16000
    for ex in _sample("train", 200, {"audio_caption": 1.0}):
        audio = ex.audio
        assert audio is not None and ex.clip is not None
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.abs(audio).max() <= 1.0
        assert len(audio) == round(ex.clip.duration * SAMPLE_RATE)
        assert SAMPLE_RATE <= len(audio) <= 2 * SAMPLE_RATE


def test_export_jsonl_writes_decodable_records(tmp_path) -> None:
    n = 24
    path = export_jsonl(tmp_path / "out", n=n, seed=5, split="heldout", image_size=64)
    assert path == tmp_path / "out" / "data.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    world = SyntheticWorld("heldout", seed=5, image_size=64)
    assert len(records) == n
    for i, rec in enumerate(records):
        ex = world[i]
        assert rec["task"] == ex.task and rec["category"] == ex.category
        assert rec.get("answer", rec.get("caption")) == ex.target
        if "image" in rec:
            with Image.open(path.parent / rec["image"]) as img:
                assert img.tobytes() == ex.image.tobytes()
        if "audio" in rec:
            data, rate = sf.read(path.parent / rec["audio"], dtype="float32")
            assert rate == SAMPLE_RATE and np.array_equal(data, ex.audio)
    assert not list(path.parent.rglob("*.tmp"))


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="split"):
        SyntheticWorld(split="test")
    with pytest.raises(ValueError, match="task_mix"):
        SyntheticWorld(task_mix={"video_vqa": 1.0})


def test_weights_in_the_data_spec_change_only_the_named_tasks_and_questions():
    from mmllm.data.sources import SyntheticSource, build_source
    from mmllm.errors import ConfigError, InputError

    tasks = "image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
    source = build_source(f"synthetic:train?{tasks}&color=0&position_x=10", image_size=32)
    qtypes = Counter(source[i].qtype for i in range(300))
    assert set(qtypes) <= set(QTYPE_OF_IMAGE_KEYS) and "color" not in qtypes
    assert qtypes["position"] > 150  # 10 of 15.7 weight is position_x (+0.5 position_y)
    plain, spelled = SyntheticSource("train", 4, 32), build_source("synthetic:train?", 4, 32)
    for i in range(20):  # no changes: the default stream, record for record
        assert plain[i].target == spelled[i].target and plain[i].prompt == spelled[i].prompt
    for bad, error in (
        ("colour=2", InputError),
        ("color=x", ConfigError),
        ("color=-1", ConfigError),
        ("color=1&shape=2&color=3", ConfigError),  # given twice: not the last silently
    ):
        with pytest.raises(error, match=r"colou?r"):
            build_source(f"synthetic:train?{bad}")
    with pytest.raises(InputError, match="every both_vqa question weighs 0"):
        build_source("synthetic:train?compare=0&more=0&match=0")


def test_question_referents_are_the_shapes_a_question_names():
    from mmllm.data.synthetic_image import question_referents

    shapes = (
        Shape("star", "red", "small", 0.2, 0.3),
        Shape("circle", "blue", "large", 0.5, 0.7),
        Shape("star", "blue", "large", 0.8, 0.5),
    )
    scene = Scene(shapes, "plain", None)
    assert question_referents("color", {"ref": "small object"}, scene) == ((0,),)
    assert question_referents("size", {"ref": "blue star"}, scene) == ((2,),)
    relation = question_referents("relation_x", {"ref": "circle", "ref2": "red object"}, scene)
    assert relation == ((1,), (0,))  # in the question's order
    assert question_referents("count_kind", {"kinds": "stars"}, scene) == ((0, 2),)
    assert question_referents("count_kind", {"kinds": "crosses"}, scene) == ()
    # presence: every shape of that colour or kind, so where it looks does not give the answer
    presence = {"a_color": "a blue", "kind": "circle"}
    assert question_referents("presence", presence, scene) == ((1, 2),)
    absent = {"a_color": "an orange", "kind": "star"}
    assert question_referents("presence", absent, scene) == ((0, 2),)
    unrelated = {"a_color": "an orange", "kind": "cross"}
    assert question_referents("presence", unrelated, scene) == ()
    assert question_referents("count", {}, scene) == ()
    # every synthetic image question's referents fit it: a "ref" question names exactly one
    world = SyntheticWorld("train", seed=0, image_size=32, task_mix={"image_vqa": 1.0})
    for ex in (world[i] for i in range(200)):
        assert all(0 <= i < len(ex.scene.shapes) for group in ex.referents for i in group)
        if ex.qtype in ("color", "shape", "size", "position", "relation"):
            assert [len(g) for g in ex.referents] == [1] * (1 + (ex.qtype == "relation"))
