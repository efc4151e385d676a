"""Compiled generation: the decode step, the prompt pass and the image encoder, each compiled
by ``torch.compile`` for fixed shapes.

A decode step of a small model on a CPU is mostly overhead around little arithmetic: the bench's
``small`` model runs ~230 PyTorch ops and 36 small matrix products per token, each paying
dispatch and a general-purpose GEMM's set-up (a (1, 256) x (256, 688) product takes ~20 us for
0.35 MFLOP). Compiled, the step becomes a few fused C++ loops and GEMM kernels generated for its
exact shapes (inductor's ``max_autotune`` CPU templates), with the weights frozen into constants
packed for them. That needs shapes that never change from one step to the next, so here:

- the KV cache is sized to the request's prompt + new tokens rounded up to a multiple of
  :data:`CACHE_BUCKET` (at most ``max_seq_len``), so requests of similar lengths share one
  compiled step;
- each new token's keys/values are written at a slot given as a tensor (``index_copy_``), and
  self-attention reads the whole cache with the slots not yet written masked off;
- positions arrive as tensors, never as Python ints;
- each layer's cache is its own tensor (``KVCache.layers``), written in place; attention runs as
  plain products and a softmax (``SDPBackend.MATH``) that inductor fuses into its own loops
  (a stacked cache was copied whole every step; see docs/performance.md).

The prompt runs through the same computation (:class:`PromptStep`, all its tokens at once),
left-padded to a multiple of :data:`PROMPT_BUCKET` tokens so that prompts of similar lengths
share one compiled pass; the image encoder and projector compile per batch of images
(:class:`ImageTokens`). Media packing and the media's cross-attention keys/values stay eager
(they depend on which rows hold which items, and compiling them gained little).

Each part compiles once per shape: batch size, prompt bucket, media length (padded to a
multiple of :data:`MEDIA_BUCKET`; once more for text without media); later requests of a known
shape reuse it (past ``torch._dynamo.config.recompile_limit``, 8 shapes of a part, new ones run
eagerly). :class:`CompiledModel` holds the compiled parts: generation and media encoding take it
as an argument, and nothing is stored on the model. Compiling takes a minute or more on a small
CPU, so it happens when a job pays for it (:func:`worth_compiling`), or when asked:
``mmllm.load(..., compile=True)``, ``--compile`` on the CLI. Greedy output is the same as eager
decoding's (tested); beam search and audio encoding stay eager. The weights are frozen into the
compiled code: compile a model that is done training, and compile again after changing its
weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import torch
import torch._inductor.config
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from encoders.disk_cache import use_for_inductor
from mmllm.errors import ConfigError
from mmllm.model.cache import KVCache, MediaContext
from mmllm.quantize import is_quantized

# torch.compile's inductor settings: its "max-autotune-no-cudagraphs" mode
COMPILE_OPTIONS = {"max_autotune": True, "coordinate_descent_tuning": True}
# ...and freezing (the weights become constants, which the CPU GEMM templates need: without it
# the step measured barely faster than eager at batch 8), without autotuning's tables on stderr.
# torch.compile's ``options`` does not carry these to where they are read, so they are patched
# around every call (compiling happens in calls)
CALL_PATCH = {"freezing": True, "max_autotune_report_choices_stats": False}
# prompts are left-padded to a multiple of this many tokens: one compiled prompt pass a bucket
PROMPT_BUCKET = 8
# the KV cache holds prompt + new tokens rounded up to a multiple of this many positions: every
# step's self-attention reads all of it, so it is kept near the request's length (sized to the
# whole context instead, a batch-8 caption of the bench's model, 40 of 128 positions, took 1.07x
# as long; SmolLM2's 8192 positions would make every step read a 377 MB cache per row)
CACHE_BUCKET = 64
# media keys/values are padded (masked) to a multiple of this many positions: a real-photo
# model's media length changes with how many things its recognizers found in each batch
MEDIA_BUCKET = 16


def has_compiler() -> bool:
    """Whether a C++ compiler is on the path (``$CXX``, g++, c++ or clang++): inductor's CPU
    backend needs one."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in names)


# compiling pays for itself from this many inputs on: its cost over the time it saves an input.
# Measured for mmllm-real on a 2-core CPU (64 photos at batch 8, inductor's cache warm):
# 50.1 ms a photo eager, 44.3 compiled (the recognizers, which run outside torch, dominate),
# and 32.5 s to compile from the warm cache (~100 s cold): 5614 photos.
AUTO_COMPILE_MIN_ITEMS = 5600


def can_compile(model: nn.Module) -> bool:
    """Whether compiled decoding can run for ``model``: a C++ compiler on a CPU (or CUDA), and
    plain float weights (int8-quantized products do not compile); not for a decoder whose
    prompt pass depends on where its image token is (``DecoderConfig.image_token_id``)."""
    weight = next(model.parameters())
    if weight.device.type == "cpu" and not has_compiler():
        return False
    if model.decoder.config.image_token_id is not None:
        return False
    return not is_quantized(model)


def worth_compiling(setting: bool | None, items: int, model: nn.Module) -> bool:
    """Whether to compile for a job of ``items`` inputs: ``setting`` True or False decides;
    None (automatic) compiles from :data:`AUTO_COMPILE_MIN_ITEMS` inputs on, where it can."""
    if setting is not None:
        return setting
    return items >= AUTO_COMPILE_MIN_ITEMS and can_compile(model)


def check_compiler(device: torch.device) -> None:
    """``ConfigError`` when compiling cannot work here: on a CPU inductor needs a C++ compiler."""
    if device.type == "cpu" and not has_compiler():
        raise ConfigError(
            "compiled decoding needs a C++ compiler on the CPU (none found: install g++, e.g. "
            "apt-get install g++); or run without compile"
        )


@contextlib.contextmanager
def stdin_kept() -> Iterator[None]:
    """Put file descriptor 0 back if it is closed or replaced inside the block.

    Compiling closes it: with torch 2.9.1 on Linux, strace shows ``close(0)`` right after each
    newly built kernel library is loaded, and later files then open as descriptor 0. Without
    this, a process that reads its standard input after compiling (a REPL, ``mmllm bench``'s
    workers) reads a closed or foreign file."""
    try:
        saved, before = os.dup(0), os.fstat(0)
    except OSError:  # no standard input to keep
        yield
        return
    try:
        yield
    finally:
        try:
            after = os.fstat(0)
            same = (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
        except OSError:
            same = False
        if not same:
            os.dup2(saved, 0)
        os.close(saved)


class SlotCache:
    """A ``KVCache``'s per-layer buffers ``(B, H_kv, T_max, hd)`` written at fixed slots.

    ``slot`` ``(1,)`` is the first position written now, the same for every row (prompts are
    left-padded to one length). ``update`` returns the whole buffers, so shapes never change.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], slot: torch.Tensor):
        self.keys, self.values, self.slot = keys, values, slot

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` ``(B, H_kv, T, hd)`` at slots ``slot .. slot + T - 1``; return every
        slot's keys/values."""
        slots = self.slot + torch.arange(k.shape[2], device=self.slot.device)
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, slots, k)
        values.index_copy_(2, slots, v)
        return keys, values


class DecodeStep(nn.Module):
    """``T`` tokens through ``decoder`` in fixed shapes (the module that gets compiled): one
    token per decode step, the whole (bucketed) prompt in :class:`PromptStep`."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        slot: torch.Tensor,
        key_valid: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        media: MediaContext | None,
    ) -> torch.Tensor:
        """Last-token logits ``(B, V)`` for ``token_ids`` ``(B, T)`` at ``positions`` ``(B, T)``.

        slot ``(1,)``: the first cache position written now; key_valid ``(B, T_max)``: False for
        each row's left padding; keys, values: each layer's cache buffers
        ``(B, H_kv, T_max, hd)``, written in place.
        """
        dec = self.decoder
        x, rope = dec.embed(token_ids, positions)  # (B, T, D); rotary tables or None
        query_slots = slot + torch.arange(token_ids.shape[1], device=slot.device)  # (T,)
        written = torch.arange(keys[0].shape[2], device=slot.device) <= query_slots[:, None]
        mask = key_valid[:, None, None, :] & written  # (B, 1, T, T_max): causal, no padding
        # attention as plain products and a softmax, which inductor fuses: the CPU's fused
        # attention kernel, called as an opaque op, took ~150 us a layer at batch 8
        with sdpa_kernel(SDPBackend.MATH):
            x = dec.blocks(x, rope, mask, SlotCache(keys, values, slot), media)
        hidden = dec.norm(x[:, -1])
        logits = dec.logits(hidden)
        # the recognized words' copy bias, where the media carry one (mmllm.model.recognition)
        return logits if media is None else media.adjust_logits(logits, hidden, token_ids[:, -1])


class PromptStep(DecodeStep):
    """The prompt's pass: the same computation as :class:`DecodeStep`, compiled separately so
    its shapes (one per prompt bucket) do not use up the decode step's recompile budget (dynamo
    counts compiled shapes per ``forward``)."""

    def forward(self, *args) -> torch.Tensor:
        return super().forward(*args)


class ImageTokens(nn.Module):
    """Image encoder then projector: pixels ``(n, 3, H, W)`` -> tokens ``(n, N, D)``, mask
    ``(n, N)`` (compiled once per batch of images; media packing stays eager: it depends on
    which rows hold which items)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module):
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with sdpa_kernel(SDPBackend.MATH):  # fused by inductor, as in DecodeStep
            return self.projector(*self.encoder(pixels))


class Compiled:
    """``module`` compiled by inductor in fixed shapes; a call with a new ``shape`` key compiles
    (with :data:`CALL_PATCH` and standard input kept), later calls with it reuse the code."""

    def __init__(self, module: nn.Module, options: dict | None = None):
        from torch._inductor import select_algorithm

        select_algorithm.PRINT_AUTOTUNE = False  # its per-product timing table, on stderr
        use_for_inductor()  # compiled code kept in mmllm's cache, for later processes
        self.fn = torch.compile(
            module,
            fullgraph=True,
            dynamic=False,
            options=dict(COMPILE_OPTIONS if options is None else options),
        )
        self.shapes: set[tuple] = set()  # the shapes already compiled for

    def __call__(self, shape: tuple, *args):
        if shape in self.shapes:  # compiled already: skip the ~25 us of patching per call
            return self.fn(*args)
        with torch._inductor.config.patch(CALL_PATCH), stdin_kept():  # the call that compiles
            out = self.fn(*args)
        self.shapes.add(shape)
        return out


def tensor_shape(x: torch.Tensor) -> tuple:
    """What a compiled graph of fixed shapes is specialised on: a tensor's shape, strides, dtype
    and device. The strides count: a non-contiguous input of a known shape (pixels from a
    permuted array) recompiles, and only a new key's first call compiles with freezing."""
    return tuple(x.shape), x.stride(), x.dtype, x.device


def bucketed(
    token_ids: torch.Tensor, mask: torch.Tensor, pad_id: int, longest: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts ``(B, T)`` and their mask to the next multiple of
    :data:`PROMPT_BUCKET` tokens (at most ``longest``), so that prompts of similar lengths share
    one compiled prompt pass. Padding is masked and positions count real tokens only: the
    result is the same up to rounding."""
    T = token_ids.shape[1]
    target = min(-(-T // PROMPT_BUCKET) * PROMPT_BUCKET, longest)
    if target <= T:
        return token_ids, mask
    return F.pad(token_ids, (target - T, 0), value=pad_id), F.pad(mask, (target - T, 0))


class CompiledDecoding:
    """The compiled prompt pass and decode step of a decoder and how generation calls them."""

    def __init__(self, decoder: nn.Module, options: dict | None = None):
        self.step = Compiled(DecodeStep(decoder), options)
        self.prompt_step = Compiled(PromptStep(decoder), options)

    bucketed = staticmethod(bucketed)
    cache_bucket = CACHE_BUCKET

    @staticmethod
    def padded_media(media: MediaContext | None) -> MediaContext | None:
        """``media`` padded to a multiple of :data:`MEDIA_BUCKET` positions."""
        return None if media is None else media.padded(MEDIA_BUCKET)

    def _run(self, compiled, token_ids, positions, slot, key_valid, cache, media):
        first = cache.layers[0][0]
        shape = (
            tuple(token_ids.shape),
            len(cache.layers),
            tensor_shape(first),
            media is None,  # text only and media without cross-attention layers: two graphs
            tuple(media.kv[0][0].shape) if media is not None and media.kv else None,
            media is not None and media.word_bias is not None,  # a copy path: another graph
        )
        keys, values = [k for k, _ in cache.layers], [v for _, v in cache.layers]
        slot = torch.tensor([slot], device=token_ids.device)
        logits = compiled(shape, token_ids, positions, slot, key_valid, keys, values, media)
        cache.advance(token_ids.shape[1])
        return logits

    def prompt(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        key_valid: torch.Tensor,
        cache: KVCache,
        media: MediaContext | None,
    ) -> torch.Tensor:
        """Last-position logits ``(B, V)`` of prompts ``token_ids`` ``(B, T)`` (left-padded,
        best :func:`bucketed`) at ``positions`` ``(B, T)``, written into the empty ``cache``."""
        return self._run(self.prompt_step, token_ids, positions, 0, key_valid, cache, media)

    def __call__(
        self,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        slot: int,
        key_valid: torch.Tensor,
        cache: KVCache,
        media: MediaContext | None,
    ) -> torch.Tensor:
        """Logits ``(B, V)`` after ``next_ids`` ``(B,)`` at ``positions`` ``(B,)``, written at
        cache position ``slot``; advances ``cache``."""
        return self._run(
            self.step, next_ids[:, None], positions[:, None], slot, key_valid, cache, media
        )


class CompiledImages:
    """The compiled :class:`ImageTokens` of a model: pixels -> projected image tokens, mask."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, options: dict | None = None):
        self.compiled = Compiled(ImageTokens(encoder, projector), options)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.compiled(tensor_shape(pixels), pixels)


class CompiledModel:
    """A model's compiled parts, the engine generation and media encoding are handed:
    ``decoding`` (prompt pass and decode step) and ``images`` (image encoder and projector, or
    None for a model without images). Each part compiles on its first call with a new shape;
    nothing is stored on the model. For inference only: the weights are frozen into the code,
    so compile again after changing them."""

    def __init__(self, model: nn.Module, options: dict | None = None):
        check_compiler(next(model.parameters()).device)
        self.decoding = CompiledDecoding(model.decoder, options)
        self.images = None
        if model.image_encoder is not None:
            self.images = CompiledImages(model.image_encoder, model.image_projector, options)
