"""Eager inference on packed weights: the default on a CPU, with no compiler needed.

A decode step of a small model is mostly per-op overhead around little arithmetic. Two parts
cut it (measurements: ``docs/performance.md``):

- :class:`PackedLinear`, an ``nn.Linear`` whose inference products of many rows (the image
  encoder's, the prompt pass's) run through oneDNN's GEMM on a weight packed once, the op
  inductor uses for frozen weights; :func:`pack_linears` puts it in place when a model is
  loaded for inference. Below ~1M multiply-adds the plain GEMM's lower fixed cost wins.
- :class:`PackedDecoder`, the decode step as one function over rearranged weights: q, k and v
  in one product, gate and up in one product, each residual add inside its output product
  (``addmm``), the cross-attention's ``tanh(gate)`` as that product's scale, and each RMSNorm
  as one fused LayerNorm (:meth:`PackedDecoder._norm`).

It computes the modules' function to float rounding (tested: logits within 1e-4, the same
greedy ids). :func:`packed_for` builds it for a decoder in evaluation without gradients, on a
CPU, in fp32, whose products are plain ``nn.Linear`` (not LoRA- or int8-wrapped); the copy is
rebuilt when the weights change (PyTorch's version counters). The prompt pass stays on the
modules.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.model.cache import KVCache, MediaContext
from mmllm.quantize import is_quantized

# decoders above this many bytes of weights keep the module path: the packed copies would cost
# as much memory again (they are for small models, where the per-op overhead dominates)
MAX_PACKED_BYTES = 256 * 2**20
# products of at least this many multiply-adds (rows x in x out) go through oneDNN's prepacked
# GEMM (measured on a 2-core x86 CPU: the crossover between ~0.5M and ~1.4M)
ONEDNN_MIN_MACS = 1_000_000
# one row (a batch-1 decode step): a product that only streams its weights is faster through
# oneDNN from about this size (GPT-2 small's 768 x 768 products: 23.2 -> 18-20 ms a token)
ONEDNN_MIN_MACS_ONE_ROW = 500_000


_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("mmllm_packed", default=True)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Inside the block (this thread or task), the modules' own ops only: e.g. to count FLOPs
    with PyTorch's counter, which does not see oneDNN's products."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


@functools.cache
def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's prepacked fp32 linear (x86 and most arm64)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``(out, in)`` reordered once for :func:`onednn_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 8)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None):
    """``x @ weight.T + bias`` for ``x`` ``(..., in)`` with ``packed`` from :func:`onednn_pack`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedLinear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose fp32 CPU inference products of at
    least :data:`ONEDNN_MIN_MACS` go through oneDNN with the weight packed once (repacked when
    it changes), from the second such product on: the first takes ``F.linear`` (a one-off
    product, a single caption's prompt pass, is not worth a copy of the weight). Training,
    gradients, other devices, dtypes and compiled graphs take ``F.linear`` as before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            torch.compiler.is_compiling()  # first: a compiled graph takes F.linear untraced
            or not onednn_applies(self, weight)
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or x.numel() * self.out_features < _min_macs(x)
        ):
            return F.linear(x, weight, self.bias)
        key = tensor_version(weight)
        cached = self.__dict__.get("_onednn")
        if cached is None or cached[0] != key:
            if self.__dict__.get("_seen") != key:  # a first product: no packed copy for it
                self.__dict__["_seen"] = key
                return F.linear(x, weight, self.bias)
            cached = self.__dict__["_onednn"] = (key, onednn_pack(weight.detach()))
        return onednn_linear(x, cached[1], self.bias)


def cpu_inference(module: nn.Module, weight: torch.Tensor) -> bool:
    """Whether ``module`` runs fp32 inference on the CPU (no training, no gradients, no CPU
    autocast, ``weight`` fp32 on the CPU) with packed weights not ``disabled()``."""
    return not (
        module.training
        or torch.is_grad_enabled()
        or torch.is_autocast_enabled("cpu")
        or weight.device.type != "cpu"
        or weight.dtype != torch.float32
        or not _ENABLED.get()
    )


def onednn_applies(module: nn.Module, weight: torch.Tensor) -> bool:
    """Whether ``module``'s product with ``weight`` may go through oneDNN: CPU inference
    (:func:`cpu_inference`) and oneDNN present."""
    return cpu_inference(module, weight) and onednn_available()


def _min_macs(x: torch.Tensor) -> int:
    """The smallest product (multiply-adds) oneDNN takes, for input rows ``x`` ``(..., in)``."""
    return ONEDNN_MIN_MACS_ONE_ROW if x.numel() == x.shape[-1] else ONEDNN_MIN_MACS


def pack_linears(model: nn.Module) -> nn.Module:
    """Make every plain ``nn.Linear`` of ``model`` a :class:`PackedLinear` in place (the same
    parameter objects: nothing is copied until a product first needs its packed weight).
    Returns ``model``."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                packed = PackedLinear.__new__(PackedLinear)
                packed.__dict__.update(child.__dict__)
                setattr(module, name, packed)
    return model


class Product:
    """``x @ weight.T`` (+ ``add``) for rows ``x`` ``(M, in)``, ``weight`` ``(out, in)``: the
    plain GEMM on a transposed copy for few rows, oneDNN's prepacked GEMM for many. Each copy
    is made when a call first needs it (oneDNN's at the second such call: a one-off product
    is not worth a copy): a product that always has enough rows for oneDNN (an LM head) never
    holds the transposed one."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        out_features, in_features = weight.shape
        self.weight = weight  # the module's own (no copy), or a concatenation of several
        self._transposed = None
        self.bias = None if bias is None else bias.contiguous()
        self.onednn_rows = None  # M from which oneDNN is faster, None: never
        self.packed = None  # oneDNN's copy
        self.used = False  # whether a product went the oneDNN way before
        if onednn_available():
            self.onednn_rows = max(1, -(-ONEDNN_MIN_MACS // (out_features * in_features)))

    @property
    def transposed(self) -> torch.Tensor:
        """``weight.T`` ``(in, out)``, contiguous: what torch.mm reads fastest (a view where
        ``weight`` is stored column-major already)."""
        if self._transposed is None:
            self._transposed = self.weight.t().contiguous()
        return self._transposed

    def __call__(
        self, x: torch.Tensor, add: torch.Tensor | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        """``scale * (x @ weight.T + bias) + add`` for ``x`` ``(M, in)`` -> ``(M, out)``."""
        if self.onednn_rows is not None and x.shape[0] >= self.onednn_rows:
            if self.packed is None and self.used:  # packed from its second product on
                self.packed = onednn_pack(self.weight)
            self.used = True
            if self.packed is None:  # a one-off product (a single caption's) makes no copy
                return self._mm(x, self.weight.t(), add, scale)
            y = onednn_linear(x, self.packed, self.bias)
            if scale != 1.0:
                y = y.mul_(scale)
            return y if add is None else y.add_(add)
        return self._mm(x, self.transposed, add, scale)

    def _mm(self, x: torch.Tensor, weight_t: torch.Tensor, add, scale: float) -> torch.Tensor:
        """The plain GEMM with ``weight_t`` ``(in, out)`` (``weight.T``, in any layout)."""
        if add is None:
            y = torch.mm(x, weight_t)
            if self.bias is not None:
                y = y.add_(self.bias)
            return y if scale == 1.0 else y.mul_(scale)
        if self.bias is not None:
            add = add + scale * self.bias
        return torch.addmm(add, x, weight_t, alpha=scale)


def column_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``(out, in)`` stored column-major: its transpose is contiguous, so a
    :class:`Product` of it keeps one copy, not two."""
    return weight.t().contiguous().t()


def fused(linears: list[nn.Linear]) -> torch.Tensor:
    """The weights of ``linears`` (one input size) as one matrix ``(sum of out, in)``, stored
    column-major (:func:`column_major`), each linear's weight then rebound to its rows: a view
    of it, the same values, so the weights are held once, not twice. (Any later write to a
    weight bumps its version, and the packed decoder is rebuilt: :func:`packed_for`.)"""
    with torch.inference_mode(False), torch.no_grad():  # a tensor that counts its writes
        weight = column_major(torch.cat([linear.weight for linear in linears]))
    start = 0
    for linear in linears:
        linear.weight.data = weight[start : start + linear.out_features]
        start += linear.out_features
    return weight


def doubled(weight: torch.Tensor) -> torch.Tensor:
    """An RMSNorm gain ``(D,)`` as the gain of :meth:`PackedDecoder._norm`'s LayerNorm ``(2D,)``."""
    return torch.cat([weight, weight])


def _bias_or_zeros(linear: nn.Linear) -> torch.Tensor:
    return linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)


class PackedLayer:
    """One decoder block's weights, rearranged (see the module docstring)."""

    def __init__(self, block: nn.Module):
        sa, mlp = block.self_attn, block.mlp
        q, k, v = sa.q_proj, sa.k_proj, sa.v_proj
        bias = None
        if q.bias is not None:
            bias = torch.cat([_bias_or_zeros(q), _bias_or_zeros(k), _bias_or_zeros(v)])
        self.qkv = Product(fused([q, k, v]), bias)  # one product: q, k, v
        self.o = Product(sa.o_proj.weight)
        self.input_norm = doubled(block.input_layernorm.weight)
        self.cross = hasattr(block, "cross_attn")
        if self.cross:
            ca = block.cross_attn
            self.cross_norm = doubled(block.cross_attn_layernorm.weight)
            self.cross_q = Product(ca.q_proj.weight)
            self.cross_q_norm = None if ca.q_norm is None else doubled(ca.q_norm.weight)
            self.cross_o = Product(ca.o_proj.weight)
            self.cross_scale = float(torch.tanh(ca.gate))
        self.post_norm = doubled(block.post_attention_layernorm.weight)
        self.gate_up = Product(fused([mlp.gate_proj, mlp.up_proj]))
        self.down = Product(mlp.down_proj.weight)


class PackedDecoder:
    """A ``Decoder``'s decode step (one token per row) on packed weights."""

    def __init__(self, decoder: nn.Module):
        cfg = decoder.config
        self.dim, self.hidden_dim, self.eps = cfg.dim, cfg.hidden_dim, cfg.norm_eps
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.attn_head_dim
        with torch.no_grad():
            self.layers = [PackedLayer(block) for block in decoder.layers]
            head = decoder.embed_tokens if decoder.lm_head is None else decoder.lm_head
            self.head = Product(head.weight)
        self.version = weights_version(decoder)  # after the layers rebind their weights
        self.embed = decoder.embed_tokens.weight
        self.final_norm = doubled(decoder.norm.weight)
        cos, sin = decoder.rotary.cos, decoder.rotary.sin  # (T_max, hd)
        half = self.head_dim // 2  # the sine with the sign that rotating half gives: see _rotated
        signed = torch.cat([-sin[:, :half], sin[:, half:]], -1)
        self.angles = torch.stack([cos, signed], 1).contiguous()  # (T_max, 2, hd)
        self.cross_slot = decoder.cross_slot

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm of ``x`` ``(..., D)`` with gain ``weight`` from :func:`doubled`, as a
        LayerNorm of ``[x, -x]``: its mean is 0 and its variance is ``mean(x^2)``, so it is
        ``x / sqrt(mean(x^2) + eps)``, in one fused op (PyTorch's CPU ``rms_norm`` is several:
        ~7 us a call at batch 1 against ~3.5 us for the concatenation and the LayerNorm)."""
        D = x.shape[-1]
        both = torch.cat([x, -x], -1)
        return torch.layer_norm(both, weight.shape, weight, None, self.eps)[..., :D]

    def _rotated(self, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor):
        """``mmllm.model.layers.apply_rotary`` of ``x`` ``(B, H, 1, hd)`` in three ops, not
        six: "rotate half" (``[-x2, x1]``) is the halves swapped (a flip of a ``(2, hd/2)``
        view) times the sine with its first half negated (``self.angles``)."""
        B, H, T, hd = x.shape
        swapped = x.view(B, H, T, 2, hd // 2).flip(3).view(B, H, T, hd)
        return torch.addcmul(x * cos, swapped, signed_sin)

    def step(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        attention_mask: torch.Tensor | None,
        media: MediaContext | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, V)`` and final (normed) hidden states ``(B, D)`` after ``token_ids``
        ``(B,)`` at ``positions`` ``(B,)``; their keys/values go into ``cache`` (advanced).

        attention_mask: ``(B, T_past + 1)``, True for real tokens, or None (no padding).
        """
        B = token_ids.shape[0]
        H, Hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        splits, heads = [(H + Hkv) * hd, Hkv * hd], [H, Hkv]
        angles = self.angles.index_select(0, positions).view(B, 2, 1, 1, hd)
        cos, sin = angles[:, 0], angles[:, 1]  # (B, 1, 1, hd): each row's own position
        past = cache.length
        if past + 1 > cache.max_len:
            raise ValueError(f"KV cache overflow: {past + 1} positions > capacity {cache.max_len}")
        mask = None if attention_mask is None else attention_mask[:, None, None, :]
        media_bias = None if media is None else media.attention_bias()
        x = F.embedding(token_ids, self.embed)  # (B, D)
        for i, layer in enumerate(self.layers):
            qk, v = layer.qkv(self._norm(x, layer.input_norm)).split(splits, 1)
            qk = self._rotated(qk.view(B, H + Hkv, 1, hd), cos, sin)  # queries and keys together
            q, k = qk.split(heads, 1)  # (B, H, 1, hd), (B, Hkv, 1, hd)
            keys, values = cache.layers[i]
            keys.narrow(2, past, 1).copy_(k)
            values.narrow(2, past, 1).copy_(v.view(B, Hkv, 1, hd))
            out = F.scaled_dot_product_attention(
                q,
                keys.narrow(2, 0, past + 1),
                values.narrow(2, 0, past + 1),
                attn_mask=mask,
                enable_gqa=Hkv != H,
            )  # (B, H, 1, hd)
            x = layer.o(out.view(B, H * hd), x)
            slot = self.cross_slot[i]
            if layer.cross and media is not None and slot is not None:
                q = layer.cross_q(self._norm(x, layer.cross_norm)).view(B, H, 1, hd)
                if layer.cross_q_norm is not None:
                    q = self._norm(q, layer.cross_q_norm)
                out = F.scaled_dot_product_attention(
                    q, *media.kv[slot], attn_mask=media_bias, enable_gqa=Hkv != H
                ).view(B, H * hd)
                if not media.all_rows:
                    out = out * media.keep.view(B, 1)
                x = layer.cross_o(out, x, layer.cross_scale)
            gate_up = layer.gate_up(self._norm(x, layer.post_norm))
            act = F.silu(gate_up[:, : self.hidden_dim]).mul_(gate_up[:, self.hidden_dim :])
            x = layer.down(act, x)
        cache.advance(1)
        hidden = self._norm(x, self.final_norm)
        return self.head(hidden), hidden


class PackedHead:
    """A decoder's LM head ``(V, D)`` (tied or not) as one oneDNN product: for decoders that
    keep the module path (too large for :class:`PackedDecoder`, or another block family), whose
    head is the largest single read of a decode step."""

    def __init__(self, decoder: nn.Module, weight: torch.Tensor):
        self.version = tensor_version(weight)
        self.packed = onednn_pack(weight.detach())
        self.transform, self.bias = decoder.head_transform, decoder.head_bias

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden ``(M, D)`` -> logits ``(M, V)`` (through the head's transform and bias, if
        any: ``Decoder.logits``)."""
        if self.transform is not None:
            hidden = self.transform(hidden)
        return onednn_linear(hidden, self.packed, self.bias)


def packed_head(decoder: nn.Module) -> PackedHead | None:
    """``decoder``'s :class:`PackedHead` (made once, remade when the head's weight changes), or
    None where oneDNN does not apply (the conditions of :class:`PackedLinear`)."""
    head = decoder.embed_tokens if decoder.lm_head is None else decoder.lm_head
    weight = head.weight
    if not onednn_applies(decoder, weight) or type(head) not in (
        nn.Embedding,
        nn.Linear,
        PackedLinear,
    ):
        return None
    packed = _HEADS.get(decoder)
    if packed is None or packed.version != tensor_version(weight):
        packed = _HEADS[decoder] = PackedHead(decoder, weight)
    return packed


_HEADS: weakref.WeakKeyDictionary[nn.Module, PackedHead] = weakref.WeakKeyDictionary()


def tensor_version(t: torch.Tensor) -> tuple[int, int]:
    """Changes whenever ``t`` is written or replaced (a tensor made in inference mode keeps no
    version count: for it, whenever replaced)."""
    return t.data_ptr(), 0 if t.is_inference() else t._version


def weights_version(module: nn.Module) -> tuple:
    """Changes whenever any parameter or buffer of ``module`` is written or replaced."""
    return tuple(tensor_version(t) for t in [*module.parameters(), *module.buffers()])


def packable(decoder: nn.Module) -> bool:
    """Whether :class:`PackedDecoder` computes ``decoder``'s step: evaluation mode without
    gradients, CPU, fp32, plain ``nn.Linear`` products, Llama's block, at most
    :data:`MAX_PACKED_BYTES`."""
    config = decoder.config  # the cheap checks first: this runs for every request
    if not config.is_llama_block or config.attn_head_dim % 2:  # the step is written for it
        return False
    if not cpu_inference(decoder, decoder.embed_tokens.weight):
        return False
    if sum(p.numel() * p.element_size() for p in decoder.parameters()) > MAX_PACKED_BYTES:
        return False
    wrapped = any(
        isinstance(m, nn.Linear) and type(m) not in (nn.Linear, PackedLinear)
        for m in decoder.modules()
    )
    return not wrapped and not is_quantized(decoder)


def packed_for(decoder: nn.Module) -> PackedDecoder | None:
    """The decoder's :class:`PackedDecoder`, built or rebuilt if its weights changed; None
    where it does not apply (:func:`packable`)."""
    if not packable(decoder):
        return None
    packed = _PACKED.get(decoder)
    if packed is None or packed.version != weights_version(decoder):
        packed = _PACKED[decoder] = PackedDecoder(decoder)
    return packed


# decoder -> its PackedDecoder (which holds no reference back, so both go with the decoder)
_PACKED: weakref.WeakKeyDictionary[nn.Module, PackedDecoder] = weakref.WeakKeyDictionary()
