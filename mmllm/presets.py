"""Named model sizes. ``tiny`` is the shipped ``mmllm-tiny``: ~5.6M parameters, trained on CPU."""

from __future__ import annotations

from encoders import AudioEncoderConfig, ImageEncoderConfig
from mmllm.config import DecoderConfig, MMConfig, ProjectorConfig

PRESETS: dict[str, MMConfig] = {
    "tiny": MMConfig(
        image=ImageEncoderConfig(
            image_size=64, patch_size=8, dim=128, n_layers=4, n_heads=4, stem="conv"
        ),
        audio=AudioEncoderConfig(
            n_mels=32, patch_freq=32, patch_time=4, dim=128, n_layers=3, n_heads=4, max_seconds=30
        ),
        projector=ProjectorConfig(kind="mlp"),
        decoder=DecoderConfig(
            vocab_size=512,
            dim=256,
            n_layers=4,
            n_heads=4,
            n_kv_heads=2,
            hidden_dim=688,
            max_seq_len=128,
            cross_attn_every=1,
            gate_init=1.0,
            train_gates=False,
            cross_attn_qk_norm=True,
        ),
    ),
}
