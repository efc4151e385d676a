"""Probes of a trained model: cross-attention weights as the model applies them and the report
of where they look; linear probes of what the image tokens say."""

import numpy as np
import pytest
import torch
from PIL import Image

import mmllm
from mmllm import MultimodalLM
from scripts.probes.attention import cross_attention, entropy, report
from tests.conftest import make_media, open_gates, tiny_config


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_weights_are_what_forward_applies(qk_norm):
    torch.manual_seed(0)
    model = open_gates(MultimodalLM(tiny_config(cross_attn_qk_norm=qk_norm)).eval())
    context = model.prepare_media(make_media())
    cross = model.decoder.layers[0].cross_attn
    x = torch.randn(3, 5, model.config.decoder.dim)
    kv = context.kv[0]
    weights = cross.attention_weights(x, kv, context)  # (B, H, T, N)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    values = kv[1].repeat_interleave(cross.n_heads // cross.n_kv_heads, dim=1)
    mixed = (weights @ values).transpose(1, 2).reshape(3, 5, -1)
    expected = torch.tanh(cross.gate) * cross.o_proj(mixed) * context.keep.view(3, 1, 1)
    torch.testing.assert_close(cross(x, kv, context), expected, rtol=1e-5, atol=1e-6)


def test_probe_reports_each_layer_and_head(tiny_checkpoint):
    mm = mmllm.load(tiny_checkpoint, device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))
    maps = cross_attention(mm, "what color is the circle?", image)
    decoder = mm.model.config.decoder
    assert len(maps) == len(mm.model.decoder.cross_layers)
    n_tokens = mm.model.config.image.n_tokens
    assert all(m.shape == (decoder.n_heads, n_tokens) for m in maps)
    assert all(0 <= e <= np.log(n_tokens) + 1e-4 for m in maps for e in entropy(m).tolist())
    lines = report(mm, ["what color is the circle?", "is there a star?"], image)
    assert len(lines) == 2 * (1 + len(maps)) and "nats" in lines[0]
    with pytest.raises(ValueError, match="needs an image or a clip"):
        cross_attention(mm, "what is it?")


def test_token_probe_finds_what_is_linearly_there_and_only_that():
    from scripts.probes.token_probe import probe_accuracy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    labels = (x[:, 2] > 0).long() + 2 * (x[:, 5] > 0).long()  # 4 classes, linear in x
    assert probe_accuracy(x[:400], labels[:400], x[400:], labels[400:], 4) > 0.9
    noise = torch.randint(0, 4, (600,), generator=g)
    assert probe_accuracy(x[:400], noise[:400], x[400:], noise[400:], 4) < 0.45


def test_token_probes_cover_each_place_and_target():
    from scripts.probes.token_probe import PROBED, token_probes

    torch.manual_seed(0)
    model = MultimodalLM(tiny_config())
    scores = token_probes(model, train_batches=2, test_batches=1)
    assert list(scores) == ["trained encoder", "after the projector"]
    assert all(
        set(row) == set(PROBED) and all(0 <= v <= 1 for v in row.values())
        for row in scores.values()
    )


def test_attention_plot_is_a_png_per_question_and_layer(tiny_checkpoint, tmp_path):
    from mmllm.errors import InputError
    from scripts.probes.attention import plot_attention

    mm = mmllm.load(tiny_checkpoint, device="cpu")
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8))
    out = plot_attention(
        mm, ["what color is the circle?", "is there a star?"], image, tmp_path / "a.png"
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as png:  # two rows of panels: taller than one would be
        assert png.height > 2 * 150
    with pytest.raises(InputError, match="needs an image or a clip"):
        plot_attention(mm, ["what is it?"], None, tmp_path / "b.png")


def test_feature_probe_learns_what_the_cells_hold():
    """The probe reads the answer off the feature cells when they hold it: here the answer is
    the brightest channel of the cells; the question words are noise."""
    from scripts.probes.feature_probe import train_probe

    g = torch.Generator().manual_seed(0)

    def make(n):
        answers = torch.randint(0, 4, (n,), generator=g)
        cells = torch.randn(n, 9, 4, generator=g) * 0.1
        cells[torch.arange(n), :, answers] += 1.0
        words = torch.randint(2, 6, (n, 3), generator=g)
        return words, cells.half(), answers

    words, cells, answers = make(512)
    test_words, test_cells, test_answers = make(128)
    predicted = train_probe((words, cells, answers), (test_words, test_cells), 6, 4, 4, seed=0)
    assert (predicted == test_answers).float().mean() > 0.9


def test_feature_probe_runs_on_each_feature_set(tmp_path):
    from torchvision.models import mobilenet_v2

    from mmllm import InputError
    from scripts.probes.feature_probe import markdown, plot, run

    torch.manual_seed(0)
    torch.save(mobilenet_v2().state_dict(), tmp_path / "mnv2.pth")
    names = ["mobilenet_v2@32", "mobilenet_v2@16", "mmllm-tiny"]
    result = run(names, n_train=24, n_test=16, epochs=1, weights=str(tmp_path / "mnv2.pth"), seed=0)
    sets = result["features"]
    assert list(sets) == names
    shapes = [(sets[n]["cells"], sets[n]["channels"]) for n in names]
    assert shapes[:2] == [(49, 1280), (196, 96)]
    assert shapes[2][0] == mmllm.load("mmllm-tiny").model.config.image.n_tokens
    assert sum(result["questions_by_type"].values()) == 16
    assert all(0 <= s["accuracy"] <= 1 and set(s["by_type"]) == set(result["questions_by_type"])
               for s in sets.values())  # fmt: skip
    table = markdown(result)
    assert all(f"| {n} |" in table for n in names)
    plot(result, tmp_path / "probe.png")
    assert (tmp_path / "probe.png").stat().st_size > 0
    with pytest.raises(InputError, match="stride"):
        run(["mobilenet_v2@4"], 4, 4, 1, str(tmp_path / "mnv2.pth"), 0)
    with pytest.raises(InputError, match="unknown feature set"):
        run(["resnet@32"], 4, 4, 1, str(tmp_path / "mnv2.pth"), 0)


def test_synthetic_attention_shares_show_the_shipped_tiny_looks_at_what_is_named():
    """mmllm-tiny was trained with the attend loss: at the answer position its cross-attention
    puts far more on the named shapes than an even look would."""
    from scripts.probes.attention import named_shares, share_table

    mm = mmllm.load("mmllm-tiny", device="cpu")
    rows = named_shares(mm, 24, seed=1)
    layers = len(mm.model.decoder.cross_layers)
    assert len(rows) >= 12 and all(len(r["shares"]) == layers for r in rows)
    assert all(0 < r["even"] < 1 and all(0 <= s <= 1 for s in r["shares"]) for r in rows)
    looked = np.mean([np.mean(r["shares"]) for r in rows])
    assert looked > 3 * np.mean([r["even"] for r in rows])
    assert np.mean([r["right"] for r in rows]) > 0.7
    lines = share_table(rows)
    assert lines[0].startswith("| question type | n | right | even share | L0")
    assert lines[-1].startswith(f"| all | {len(rows)} |")
