"""The tiny model card's description of the model comes from the run's configuration."""

import dataclasses
import json

from mmllm.presets import PRESETS
from scripts.tiny_card import architecture


def test_architecture_line_names_the_parts_and_only_the_extras_in_use():
    config = PRESETS["tiny"]
    plain = architecture({"model": config.to_dict()})
    assert "image ViT 4 x 128 (conv stem, 64 px, patch 8)" in plain
    assert "decoder 4 x 256 with gated cross-attention (QK-norm) in every block" in plain
    unnormed = dataclasses.replace(config.decoder, cross_attn_qk_norm=False)
    line = architecture({"model": dataclasses.replace(config, decoder=unnormed).to_dict()})
    assert "gated cross-attention in every block" in line
    assert "null" not in plain and "position" not in plain and "per token" in plain
    projector = dataclasses.replace(config.projector, image_positions=True, null_tokens=2)
    extras = dataclasses.replace(config, projector=projector).to_dict()
    line = architecture({"model": extras, "loss_per_example": True})
    assert "a learned embedding per image token position" in line
    assert "2 learned null media tokens" in line and "averaged per example" in line


def test_card_states_the_pretraining_targets_and_the_hardware():
    from mmllm.train.image_pretrain import PATCH_GROUPS
    from scripts.tiny_card import CATEGORIES, render_card

    scores = {k: {"accuracy": 0.5, "n": 10} for k in [*CATEGORIES, "overall", "qtype/color"]}
    heldout = {**scores, "_meta": {"n": 10}}
    run = {
        "heldout": heldout,
        "heldout-paraphrase": scores,
        "heldout-no-audio": scores,
        "heldout-no-image": scores,
        "majority_baseline": {k: 0.3 for k in CATEGORIES},
        "parameters": 5_000_000,
    }
    train = dict(seed=0, batch_size=32, weight_decay=0.05, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    train |= dict(grad_clip=1.0, model=PRESETS["tiny"].to_dict())
    metrics = [{"step": 100, "loss": 1.0, "elapsed_s": 600.0}]
    got = {"pairs": 0.5, "sides": 0.25, "count": 1.0, "word": 1.0}
    got |= {f"patch_{g}": 0.9 for g in PATCH_GROUPS}
    pre = {"config": {"steps": 30, "batch_size": 8, "patch_weight": 1.0}, "heldout": got}
    pre["wall_s"] = 120.0
    card = render_card("m", run, train, metrics, 1.0, "mmllm train", "runs/m", pre, "two threads")
    assert "a linear head on each token (weight 1.0)" in card
    assert "colour 90.0%" not in card and "color 90.0%, kind 90.0%" in card
    assert "centre x 90.0%, centre y 90.0%" in card
    assert "Wall time: 12.0 min" in card and "2-core x86_64 CPU, two threads, fp32: " in card
    pre["config"]["patch_weight"] = 0.0  # pooled targets alone: no per-token sentence
    assert "each token" not in render_card("m", run, train, metrics, 1.0, "c", "r", pre)


def test_a_three_stage_card_sums_the_stages_and_names_each(tmp_path):
    from mmllm.train.plot import plot_metrics
    from scripts.tiny_card import CATEGORIES, render_card

    scores = {k: {"accuracy": 0.5, "n": 10} for k in [*CATEGORIES, "overall"]}
    run = {k: scores for k in ("heldout-paraphrase", "heldout-no-audio", "heldout-no-image")}
    run |= {"heldout": {**scores, "_meta": {"n": 10}}, "parameters": 5_000_000}
    run["majority_baseline"] = {k: 0.3 for k in CATEGORIES}
    common = dict(batch_size=32, weight_decay=0.05, warmup=10, min_lr_ratio=0.1, grad_clip=1.0)
    first = dict(common, seed=0, lr=1e-3, model=PRESETS["tiny"].to_dict())
    last = dict(common, seed=3, lr=3e-4, patch_weight=0.5, attend_weight=0.3, model=None)
    middle = dict(last, data="synthetic:train?count_kind=2", stage="decoder")
    first_rows = [{"step": 600, "loss": 1.0, "elapsed_s": 1800.0}]
    middle_rows = [{"step": 200, "loss": 0.5, "elapsed_s": 600.0}, {"step": 200, "eval": {}}]
    last_rows = [{"step": 50, "loss": 0.4, "elapsed_s": 120.0}]
    earlier = [(first, first_rows), (middle, middle_rows)]
    card = render_card("m", run, last, last_rows, 1.0, "c", "r", earlier_stages=earlier)
    assert "Wall time: 42.0 min" in card and "3 stages" in card
    assert "the time the training loops report" in card  # no overhead rows: says what it counts
    timed = [(c, [*rows, {"step": 1, "overhead_s": 30.0}]) for c, rows in earlier]
    with_overhead = [*last_rows, {"step": 50, "overhead_s": 30.0}]
    timed_card = render_card("m", run, last, with_overhead, 1.0, "c", "r", earlier_stages=timed)
    assert "Wall time: 43.5 min" in timed_card and "end to end, each stage's set-up" in timed_card
    assert "- Stage 1 of 3: `synthetic:train`, seed 0, generated on the fly (600 steps" in card
    assert "- Stage 2 of 3 (from stage 1's checkpoint): `synthetic:train?count_kind=2`" in card
    assert card.count("`--stage decoder`: the encoders and projectors frozen") == 1
    assert "- Stage 3 of 3 (from stage 2's checkpoint): `synthetic:train`, seed 3" in card
    assert card.count("per-token image loss") == 2 and "0.5 x a per-token" in card
    assert card.count("0.3 x an attention loss (`--attend-weight`)") == 2
    assert "image ViT 4 x 128" in card  # the architecture comes from the first stage
    for name, rows in (("a", first_rows), ("b", last_rows)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    png = plot_metrics([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "m.png")
    assert png is not None and png.stat().st_size > 1000
    assert plot_metrics([tmp_path / "a.jsonl", tmp_path / "missing.jsonl"], tmp_path / "x") is None


def test_smol_card_names_the_image_pathway_and_its_fixed_positions():
    from encoders.hybrid import hybrid_config
    from scripts.smol_card import image_pathway

    image = hybrid_config("mobilenet_v2", 224, n_layers=0)
    config = dataclasses.replace(PRESETS["tiny"], image=image)
    plain = image_pathway(config)
    assert (
        plain
        == "mobilenet_v2 (ImageNet, frozen), its stride-32 feature map straight to the projector"
    )
    fixed = dataclasses.replace(config, image=dataclasses.replace(image, fixed_positions=1.0))
    assert "with fixed sin-cos cell positions (scale 1)" in image_pathway(fixed)
    projected = dataclasses.replace(
        fixed, projector=dataclasses.replace(fixed.projector, fixed_image_positions=0.5)
    )
    assert image_pathway(projected).endswith(
        "positions (scale 1) straight to the projector, fixed sin-cos positions (scale 0.5) "
        "added to the projected tokens"
    )


def test_smol_card_names_what_a_run_adds_to_the_loss_and_the_model():
    from scripts.smol_card import training_extras

    assert training_extras({"lr": 2e-4, "patch_weight": 0.0, "attend_weight": 0.0}) == ""
    text = training_extras(
        {"projected_image_positions": 1.0, "patch_weight": 0.5, "attend_weight": 0.5}
    )
    assert text.startswith("; a fixed sin-cos table (scale 1) added to the projected image")
    assert "; 0.5 x a per-cell image loss (`--patch-weight`" in text
    assert text.endswith("pulled onto the shapes the question names)")


def test_smol_card_summary_keeps_a_decimal_so_99_5_is_not_called_100():
    from scripts.smol_card import card_summary

    run = {
        "heldout": {"image": {"accuracy": 0.909}, "audio": {"accuracy": 0.995}},
        "tuxpaint": {"noun/stamp_image": {"accuracy": 0.0}, "noun/stamp_sound": {"accuracy": 0.0}},
        "text_only": {"identical": 5, "prompts": [0] * 5, "perplexity": {"diff_pct": 0.0}},
    }
    summary = card_summary(run)
    assert "(90.9% of held-out image questions, 99.5% of audio ones)" in summary
    assert "rarely names unseen ones (0.0% / 0.0% of held-out stamps)" in summary
    assert summary.endswith("With no media it is exactly SmolLM2.")
