"""Caches for fast generation, passed as arguments (never stored on modules).

``KVCache`` is preallocated once per request (nanochat's engine does the same): each decode step
writes its keys/values in place, with no reallocation or concatenation. ``MediaContext`` holds
the cross-attention keys/values of the media, computed once per request and reused every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmllm.model.recognition import choose_word_bias


class KVCache:
    """Self-attention keys/values, a pair ``(B, H_kv, T_max, hd)`` per layer, and how many
    positions are filled.

    Each layer's buffers are separate tensors, not views of one stacked buffer: compiled decoding
    (``mmllm.compiled``) writes them in place, and views of one buffer made inductor copy the
    whole of it at every step (~10x the attention's time at batch 8).
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.layers = [
            (
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
            )
            for _ in range(n_layers)
        ]
        self.max_len = max_len
        self.length = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` ``(B, H_kv, T, hd)`` after the filled part; return all keys/values."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_len}")
        keys, values = self.layers[layer]
        keys.narrow(2, self.length, k.shape[2]).copy_(k)
        values.narrow(2, self.length, v.shape[2]).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as filled (after every layer has written them)."""
        self.length += n

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (B',) in this order (beam search, dropping finished rows)."""
        self.layers = [(k[rows], v[rows]) for k, v in self.layers]


@dataclass
class MediaContext:
    """Cross-attention keys/values per cross-attention layer, and which media keys are real.

    kv[i]: ``(k, v)`` each ``(B, H_kv, N, hd)`` for the i-th cross-attention layer.
    attn_mask: ``(B, 1, 1, N)`` bool, True where a media token is real; all True in rows without
    media (they attend to their zero padding and are zeroed by ``keep``: no NaN).
    keep: ``(B, 1, 1, 1)`` 1.0 for rows with media, 0.0 without, in the keys' dtype.
    Both are made once per request by :meth:`of`, not in every layer at every step.
    all_rows: every row has media.
    rows: for a group of a batch's rows (``MultimodalLM``'s ``length_groups``), which rows.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    attn_mask: torch.Tensor
    keep: torch.Tensor
    rows: torch.Tensor | None = None  # (B,): the batch rows these are (None: all, in order)
    # a copy path for recognized words (mmllm.model.recognition): per row a bias over the vocabulary
    # for each kind of id (B, 3, V), added to the logits times a gate the hidden state sets,
    # (..., D) -> (..., 1); each id's flags towards the next word (V,) choose per position
    word_bias: torch.Tensor | None = None
    word_gate: Callable[[torch.Tensor], torch.Tensor] | None = None
    word_joins: torch.Tensor | None = None
    all_rows: bool = False  # every row has media (``keep`` is all ones and can be skipped)
    _bias: tuple[torch.Tensor | None] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, kv: list[tuple[torch.Tensor, torch.Tensor]], media_mask: torch.Tensor):
        """The context of keys/values ``kv`` for media with mask ``media_mask`` ``(B, N)``."""
        rows = media_mask.any(1)[:, None, None, None]  # (B, 1, 1, 1): the row has media
        dtype = kv[0][0].dtype if kv else torch.float32
        every = bool(rows.all())
        return cls(kv, media_mask[:, None, None, :] | ~rows, rows.to(dtype), all_rows=every)

    def attention_bias(self) -> torch.Tensor | None:
        """``attn_mask`` as an eager decode step passes it to SDPA, made once per context:
        None where every media key is real (nothing to mask), else an additive mask
        ``(B, 1, 1, N)`` (0 or -inf) in the keys' dtype. SDPA turns a bool mask into that
        in every call: two extra ops a layer and a step."""
        if self._bias is None:
            bias = None
            if not bool(self.attn_mask.all()):
                dtype = self.kv[0][0].dtype if self.kv else torch.float32
                bias = torch.zeros(self.attn_mask.shape, dtype=dtype, device=self.attn_mask.device)
                bias.masked_fill_(~self.attn_mask, float("-inf"))
            self._bias = (bias,)
        return self._bias[0]

    def select(self, rows: torch.Tensor) -> MediaContext:
        """The same context for rows ``rows`` only (repeat rows for beams)."""
        return MediaContext(
            kv=[(k[rows], v[rows]) for k, v in self.kv],
            attn_mask=self.attn_mask[rows],
            keep=self.keep[rows],
            rows=None if self.rows is None else self.rows[rows],
            word_bias=None if self.word_bias is None else self.word_bias[rows],
            word_gate=self.word_gate,
            word_joins=self.word_joins,
            all_rows=self.all_rows,
        )

    def padded(self, multiple: int) -> MediaContext:
        """The same context with the media keys/values padded to a multiple of ``multiple``
        positions, masked off (compiled decoding: fewer distinct media lengths to compile)."""
        n = self.attn_mask.shape[-1]
        extra = -(-n // multiple) * multiple - n
        if extra == 0:
            return self
        kv = [(F.pad(k, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra))) for k, v in self.kv]
        mask = F.pad(self.attn_mask, (0, extra), value=False) | ~self.keep.bool()
        return dataclasses.replace(self, kv=kv, attn_mask=mask)

    def adjust_logits(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        previous: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, [T,] V)`` from final hidden states ``(B, [T,] D)`` at tokens
        ``previous`` ``(B, [T])`` plus the gated word bias of their rows (``rows`` ``(N,)``:
        each flat position's row, for logits ``(N, V)``); unchanged without one."""
        if self.word_bias is None or self.word_gate is None:
            return logits
        bias = self.word_bias if rows is None else self.word_bias[rows]  # (B or N, 3, V)
        if logits.ndim == 3 and rows is None:
            bias = bias[:, None]
        joins = self.word_joins if self.word_joins is not None else previous.new_zeros(0)
        bias = choose_word_bias(bias, previous, joins)
        gate = torch.sigmoid(self.word_gate(hidden).float())
        return logits + (gate * bias).to(logits.dtype)
