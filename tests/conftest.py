"""Shared tiny configurations: every model test builds a model small enough to run in ~0.1 s."""

from __future__ import annotations

import os

import pytest
import torch

from encoders import AudioEncoderConfig, ImageEncoderConfig
from mmllm import DecoderConfig, MediaBatch, MMConfig, MultimodalLM, ProjectorConfig
from mmllm.weights.checkpoint import save_checkpoint

# a tiny Hugging Face ViT (or BLIP vision model) config: 16 patches of a 32 x 32 picture, 32 wide
TINY_HF_VIT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_config(projector: str = "mlp", **decoder) -> MMConfig:
    return MMConfig(
        image=ImageEncoderConfig(image_size=32, patch_size=8, dim=32, n_layers=1, n_heads=2),
        audio=AudioEncoderConfig(
            n_mels=16, patch_freq=16, patch_time=4, dim=32, n_layers=1, n_heads=2, max_seconds=4
        ),
        projector=ProjectorConfig(kind=projector, n_latents=4, n_layers=1, n_heads=2),
        decoder=DecoderConfig(
            **{
                "vocab_size": 64,
                "dim": 48,
                "n_layers": 3,
                "n_heads": 4,
                "n_kv_heads": 2,
                "hidden_dim": 96,
                "max_seq_len": 64,
                "cross_attn_every": 2,
                **decoder,
            }
        ),
        max_media_items=4,
    )


def open_gates(model: MultimodalLM, value: float = 0.5) -> MultimodalLM:
    """Set every cross-attention gate to ``value`` so media actually reach the text."""
    with torch.no_grad():
        for i in model.decoder.cross_layers:
            model.decoder.layers[i].cross_attn.gate.fill_(value)
    return model


def flat_grads(module: torch.nn.Module) -> torch.Tensor:
    """Every gradient ``module``'s parameters hold after a backward pass, as one flat vector."""
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def randomize(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Random weights everywhere (norm scales around 1), so a wrong mapping cannot hide."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def config() -> MMConfig:
    return tiny_config()


@pytest.fixture
def model(config: MMConfig) -> MultimodalLM:
    torch.manual_seed(0)
    return MultimodalLM(config).eval()


def make_media(seed: int = 0) -> MediaBatch:
    """Three samples: image + audio; two images; nothing."""
    g = torch.Generator().manual_seed(seed)
    images = [[torch.randn(3, 32, 32, generator=g)], [torch.randn(3, 32, 32, generator=g)] * 2, []]
    audio = [[0.1 * torch.randn(8000, generator=g)], [], []]
    return MediaBatch.from_lists(images=images, audio=audio)


@pytest.fixture
def media() -> MediaBatch:
    return make_media()


@pytest.fixture
def token_ids() -> torch.Tensor:
    return torch.randint(4, 64, (3, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny model with a real BPE tokenizer, saved as a checkpoint folder."""
    from mmllm import Tokenizer
    from mmllm.data.sources import SyntheticSource

    source = SyntheticSource("train", seed=0, image_size=32)
    texts = [t for i in range(300) for t in (source[i].prompt, source[i].target)]
    tokenizer = Tokenizer.train(texts, vocab_size=300)
    torch.manual_seed(0)
    config = tiny_config(vocab_size=tokenizer.vocab_size)
    model = open_gates(MultimodalLM(config).eval(), value=1.0)
    with torch.no_grad():  # larger weights than the 0.02 init: outputs that depend on inputs
        for p in model.decoder.parameters():
            if p.ndim == 2:
                p.mul_(8)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", tokenizer=tokenizer)
