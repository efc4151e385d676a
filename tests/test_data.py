"""Datasets: JSONL records and their errors, export round trip, collation."""

import json

import pytest

from mmllm import DataError, Tokenizer
from mmllm.data.collate import IGNORE_INDEX, Collator, Record
from mmllm.data.jsonl import IMAGE_CAPTION_PROMPT, read_jsonl
from mmllm.data.synthetic import export_jsonl
from mmllm.processing import MediaProcessor


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_jsonl(tmp_path_factory.mktemp("syn"), n=12, seed=3, split="heldout")


def test_exported_split_reads_back(exported):
    records = read_jsonl(exported)
    assert len(records) == 12
    assert all(r.images or r.audio for r in records)
    assert all(p.is_file() for r in records for p in [*r.images, *r.audio])


def write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "a.png").write_bytes(b"x")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "must be a JSON object"),
        ('{"image": "a.png", "task": "vqa", "question": "q?"}', "'answer' must be"),
        ('{"image": "missing.png", "task": "caption", "caption": "c"}', "not found"),
        ('{"task": "caption", "caption": "c"}', "needs an 'image' or 'audio'"),
        ('{"image": "a.png", "task": "draw", "caption": "c"}', "'task' must be"),
        ('{"image": "a.png", "task": "caption", "caption": "c", "colour": 1}', "unknown keys"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"image": "a.png", "task": "caption", "caption": "a red circle"})
    path = write(tmp_path, [good, line])
    with pytest.raises(DataError, match=message) as err:
        read_jsonl(path)
    assert f"{path}:2:" in str(err.value)


def test_caption_records_get_the_caption_instruction(tmp_path):
    path = write(tmp_path, [json.dumps({"image": "a.png", "task": "caption", "caption": "c"})])
    assert read_jsonl(path)[0].prompt == IMAGE_CAPTION_PROMPT


def test_collator_takes_loss_on_the_answer_only():
    tokenizer = Tokenizer.train(["what color is it?", "red", "blue"], vocab_size=280)
    collate = Collator(tokenizer, MediaProcessor(None, None), max_len=32)
    batch = collate([Record("what color is it?", "red"), Record("what?", "blue")])
    for row, record in enumerate([Record("what color is it?", "red"), Record("what?", "blue")]):
        labelled = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labelled == [*tokenizer.encode(record.target), tokenizer.eos_id]
    assert batch.token_ids[1, -1] == tokenizer.pad_id  # right padding


def test_a_mixture_draws_each_source_at_its_weight_and_is_fixed_by_seed(exported):
    from mmllm.data.sources import build_source

    spec = f"synthetic:train@3+{exported}@1"
    mix, again = build_source(spec, seed=5), build_source(spec, seed=5)
    picks = [mix[k].source is not None for k in range(400)]  # JSONL records say file:line
    assert 0.18 < sum(picks) / len(picks) < 0.32  # the JSONL share: 1 of 4
    assert [mix[k].target for k in range(50)] == [again[k].target for k in range(50)]
    fresh = build_source(spec, seed=5)  # read backwards from far in, as a resumed run would
    backwards = [fresh[k].target for k in range(5000, 4900, -1)]
    assert backwards == [mix[k].target for k in range(4901, 5001)][::-1]
    other = build_source(spec, seed=6)
    assert [mix[k].target for k in range(50)] != [other[k].target for k in range(50)]


@pytest.mark.parametrize("spec", ["synthetic:train@x+synthetic:heldout", "synthetic:train@-1"])
def test_bad_mixture_weights_are_refused(spec):
    from mmllm.data.sources import build_source

    with pytest.raises(ValueError, match=r"weight|mixture"):
        build_source(spec)
