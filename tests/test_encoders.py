"""Encoder and projector shapes, masks, and batch invariance of the audio encoder."""

import torch

from encoders import AudioEncoder, ImageEncoder
from mmllm.model.projector import build_projector
from tests.conftest import tiny_config


def test_image_encoder_shapes():
    cfg = tiny_config().image
    tokens, mask = ImageEncoder(cfg)(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, cfg.n_tokens, cfg.dim)
    assert mask.shape == (2, cfg.n_tokens) and mask.all()


def test_audio_encoder_shapes_and_padding_mask():
    cfg = tiny_config().audio
    lengths = torch.tensor([16000, 8000, 4000])
    tokens, mask = AudioEncoder(cfg)(torch.randn(3, 16000), lengths)
    assert tokens.shape == (3, cfg.n_tokens(16000), cfg.dim)
    assert mask.sum(1).tolist() == [cfg.n_tokens(int(n)) for n in lengths]


def test_audio_clip_encodes_the_same_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    encoder = AudioEncoder(tiny_config().audio).eval()
    clips = torch.randn(2, 12000)
    lengths = torch.tensor([12000, 7000])
    batched, mask = encoder(clips, lengths)
    alone, _ = encoder(clips[1:, :7000], lengths[1:])
    torch.testing.assert_close(batched[1][mask[1]], alone[0], rtol=1e-5, atol=1e-5)


def test_projector_shapes():
    cfg = tiny_config()
    mlp = build_projector(cfg.projector, 32, 48)
    out, mask = mlp(torch.randn(2, 10, 32), torch.ones(2, 10, dtype=torch.bool))
    assert out.shape == (2, 10, 48) and mask.shape == (2, 10)
    resampler = build_projector(tiny_config("resampler").projector, 32, 48)
    keep = torch.tensor([[True] * 10, [True] * 3 + [False] * 7])
    out, mask = resampler(torch.randn(2, 10, 32), keep)
    assert out.shape == (2, 4, 48) and mask.all()


def test_resampler_ignores_padded_tokens():
    torch.manual_seed(0)
    resampler = build_projector(tiny_config("resampler").projector, 32, 48).eval()
    tokens = torch.randn(1, 10, 32)
    keep = torch.tensor([[True] * 6 + [False] * 4])
    garbage = tokens.clone()
    garbage[:, 6:] = 100.0
    torch.testing.assert_close(resampler(tokens, keep)[0], resampler(garbage, keep)[0])


def test_conv_stem_gives_the_same_token_grid():
    from dataclasses import replace

    cfg = replace(tiny_config().image, stem="conv")
    encoder = ImageEncoder(cfg).eval()
    pixels = torch.randn(3, 3, 32, 32)
    tokens, mask = encoder(pixels)
    assert tokens.shape == (3, cfg.n_tokens, cfg.dim) and mask.all()
    torch.testing.assert_close(encoder(pixels[:1])[0], tokens[:1])  # eval: no batch coupling
