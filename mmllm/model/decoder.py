"""The decoder-only language model that reads text and attends to media.

Each block: causal self-attention -> (every k-th block) gated cross-attention to the media ->
SwiGLU MLP, each with a pre-RMSNorm and a residual. Names follow Hugging Face's Llama
(``embed_tokens``, ``layers.i.self_attn.q_proj``, ``layers.i.mlp.gate_proj``, ``norm``) so a
Llama-family checkpoint maps in by key table; the new parts are ``layers.i.cross_attn.*`` and
``layers.i.cross_attn_layernorm``. The LM head is tied to the embeddings unless configured not to.
The same block, configured (``DecoderConfig``: LayerNorm, learned positions, a GELU MLP, biases,
an ungated cross-attention), is GPT-2's, and with attention in both directions (``causal``
off) BERT's encoder: an imported model keeps one code path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.config import DecoderConfig
from mmllm.model.attention import GatedCrossAttention, SelfAttention, causal_mask, padding_mask
from mmllm.model.cache import KVCache, MediaContext
from mmllm.model.layers import RotaryEmbedding, column_major_, make_mlp, make_norm


class DecoderBlock(nn.Module):
    def __init__(self, config: DecoderConfig, cross_attn: bool):
        super().__init__()
        norm, eps = config.norm, config.norm_eps
        self.post_norm = config.post_norm
        self.cross_only = cross_attn and config.cross_attn_only
        self.input_layernorm = make_norm(norm, config.dim, eps)
        if self.cross_only:  # Llama 3.2 Vision's layer: its MLP is gated as its attention is
            self.cross_attn = GatedCrossAttention(config)
            self.mlp_gate = nn.Parameter(torch.full((1,), config.gate_init))
        else:
            self.self_attn = SelfAttention(config)
        if cross_attn and not self.cross_only:
            self.cross_attn_layernorm = make_norm(norm, config.dim, eps)
            self.cross_attn = GatedCrossAttention(config)
        self.post_attention_layernorm = make_norm(norm, config.dim, eps)
        self.mlp = make_mlp(config.mlp, config.dim, config.hidden_dim, config.linear_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        media: MediaContext | None,
        media_kv: tuple[torch.Tensor, torch.Tensor] | None,
        cross_queries: list[torch.Tensor] | None = None,
        reads_media: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cross_queries``: see ``Decoder.hidden``. ``reads_media`` ``(B, T, 1)``: 0 where a
        text position comes before the image token (a cross-only layer's MLP adds nothing
        there); None: everywhere 1."""
        cross = media is not None and media_kv is not None
        if self.cross_only:
            if not cross:  # no media: the whole layer is skipped
                return x
            query = self.input_layernorm(x)
            if cross_queries is not None:
                cross_queries.append(query)
            x = x + self.cross_attn(query, media_kv, media)
            out = self.mlp(self.post_attention_layernorm(x))
            if reads_media is not None:
                out = out * reads_media.to(out.dtype)
            return x + torch.tanh(self.mlp_gate) * out
        if self.post_norm:  # BERT's order: norm(x + sub-layer(x))
            x = self.input_layernorm(x + self.self_attn(x, rope, mask, cache, layer))
            if cross:
                if cross_queries is not None:
                    cross_queries.append(x)
                x = self.cross_attn_layernorm(x + self.cross_attn(x, media_kv, media))
            return self.post_attention_layernorm(x + self.mlp(x))
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, layer)
        if cross:
            query = self.cross_attn_layernorm(x)
            if cross_queries is not None:
                cross_queries.append(query)
            x = x + self.cross_attn(query, media_kv, media)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """token_ids ``(B, T)`` (+ media context) -> logits ``(B, T, V)``."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        learned = config.positions == "learned"
        self.embed_positions = nn.Embedding(config.max_seq_len, config.dim) if learned else None
        self.layers = nn.ModuleList(
            DecoderBlock(config, config.has_cross_attn(i)) for i in range(config.n_layers)
        )
        norm = make_norm(config.norm, config.dim, config.norm_eps)
        # post-norm (BERT): the embeddings are normed, and each block ends normed already
        self.embed_norm = norm if config.post_norm else None
        self.norm = nn.Identity() if config.post_norm else norm
        head_vocab = config.head_vocab_size or config.vocab_size
        self.lm_head = (
            None if config.tie_embeddings else nn.Linear(config.dim, head_vocab, bias=False)
        )
        # BERT's head: dense + GELU + LayerNorm, then the (tied) product with a bias
        self.head_transform = HeadTransform(config) if config.head_transform else None
        self.head_bias = nn.Parameter(torch.zeros(head_vocab)) if config.head_transform else None
        self.rotary = (  # learned positions: none
            None
            if learned
            else RotaryEmbedding(
                config.attn_head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling
            )
        )
        self.cross_layers = [i for i in range(config.n_layers) if config.has_cross_attn(i)]
        self.apply(_init_weights)
        for module in self.modules():  # every per-token matrix product: see column_major_
            if isinstance(module, nn.Linear):
                column_major_(module)
        # layer -> index of its cross-attention K/V in MediaContext.kv (None: no cross-attn)
        self.cross_slot = [
            self.cross_layers.index(i) if i in self.cross_layers else None
            for i in range(config.n_layers)
        ]

    def new_cache(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> KVCache:
        cfg = self.config
        return KVCache(
            cfg.n_layers,
            batch_size,
            cfg.n_kv_heads,
            max_len,
            cfg.attn_head_dim,
            device=device,
            dtype=dtype,
        )

    def prepare_media(self, media: torch.Tensor, media_mask: torch.Tensor) -> MediaContext:
        """media ``(B, N, D)``, mask ``(B, N)`` -> every cross-attention layer's K/V."""
        kv = [self.layers[i].cross_attn.media_kv(media) for i in self.cross_layers]
        return MediaContext.of(kv, media_mask)

    def forward(
        self,
        token_ids: torch.Tensor,
        media: MediaContext | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, V)`` for ``token_ids`` ``(B, T)`` (arguments as ``hidden``), with
        the media's word bias where they carry one (``MediaContext.adjust_logits``)."""
        hidden = self.hidden(token_ids, media, attention_mask, position_ids, cache)
        logits = self.logits(hidden)
        return logits if media is None else media.adjust_logits(logits, hidden, token_ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``(..., D)`` -> logits ``(..., V)``."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        if self.head_transform is not None:
            hidden = self.head_transform(hidden)
        return F.linear(hidden, weight, self.head_bias)

    def hidden(
        self,
        token_ids: torch.Tensor,
        media: MediaContext | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_queries: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Final (normed) hidden states ``(B, T, D)`` for ``token_ids`` ``(B, T)``.

        attention_mask: ``(B, T_past + T)``, True for real tokens (left padding is False).
        position_ids: ``(B, T)``; by default counted over the real tokens of each row.
        cache: filled in place with this call's keys/values, then advanced by T.
        cross_queries: a list to receive, per cross-attention layer in order, the normed states
        ``(B, T, D)`` it queries the media with (what training's attention loss reads).
        """
        B, T = token_ids.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {past + T} tokens exceeds max_seq_len {self.config.max_seq_len}"
            )
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(past, past + T, device=token_ids.device).expand(B, T)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        x, rope = self.embed(token_ids, position_ids)
        reads_media = None
        image_token = self.config.image_token_id
        if image_token is not None and media is not None and past == 0:  # the prompt's pass
            reads_media = ((token_ids == image_token).cumsum(1) > 0)[..., None]  # (B, T, 1)
        if self.config.causal:
            mask = causal_mask(attention_mask, T, past + T, token_ids.device)
        else:  # an encoder: every token sees every real token
            mask = padding_mask(attention_mask, T, token_ids.device)
        x = self.blocks(x, rope, mask, cache, media, cross_queries, reads_media)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def embed(
        self, token_ids: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """token_ids and position_ids ``(B, T)`` -> the blocks' input ``(B, T, D)`` and the
        rotary tables for those positions (None with learned positions, added here instead)."""
        x = self.embed_tokens(token_ids)  # (B, T, D)
        rope = None
        if self.embed_positions is not None:
            x = x + self.embed_positions(position_ids)
        else:  # queries and keys come out of autocast's dtype where it is on
            device = x.device.type
            on = torch.is_autocast_enabled(device)
            rope = self.rotary(position_ids, torch.get_autocast_dtype(device) if on else x.dtype)
        return (x if self.embed_norm is None else self.embed_norm(x)), rope

    def blocks(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache,
        media: MediaContext | None,
        cross_queries: list[torch.Tensor] | None = None,
        reads_media: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embedded tokens ``(B, T, D)`` through every block (unnormed); ``cache``: anything
        with ``update(layer, k, v)`` (``KVCache``, ``mmllm.compiled.SlotCache``) or None.
        ``reads_media``: see ``DecoderBlock.forward``."""
        for i, block in enumerate(self.layers):
            slot = self.cross_slot[i]
            media_kv = media.kv[slot] if media is not None and slot is not None else None
            x = block(x, rope, mask, cache, i, media, media_kv, cross_queries, reads_media)
        return x


class HeadTransform(nn.Module):
    """BERT's head transform: hidden ``(..., D)`` -> ``norm(gelu(dense(hidden)))``."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.dim, config.dim)
        self.norm = make_norm(config.norm, config.dim, config.norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden)))


def _init_weights(module: nn.Module) -> None:
    """GPT-2/Llama-style init: N(0, 0.02) weights, zero biases (gates keep their 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
