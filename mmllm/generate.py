"""Token generation with a preallocated KV cache and media K/V computed once per request.

Prompts of different lengths are left-padded; each row gets its own positions (counted over its
real tokens) and its own end: a row that emitted EOS keeps emitting padding while the others
finish, so a batch gives exactly what each row gives alone. Greedy when ``temperature == 0``;
otherwise temperature, top-k and top-p (nucleus) sampling from a seeded generator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mmllm.errors import GenerationError
from mmllm.model.cache import KVCache, MediaContext
from mmllm.model.multimodal import MultimodalLM
from mmllm.packed import packed_for, packed_head
from mmllm.repetition import RepetitionGuard
from mmllm.tokenizer import StopTokens

if TYPE_CHECKING:
    from mmllm.compiled import CompiledModel


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    repetition_guard: bool = True  # no loops, no word glued to itself (mmllm.repetition)
    no_repeat_ngram: int = 0  # > 0: no repeated n-gram of tokens (transformers' option)

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise GenerationError(
                f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"
            )
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise GenerationError(f"temperature must be >= 0 and finite, got {self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise GenerationError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.no_repeat_ngram, int) or self.no_repeat_ngram < 0:
            raise GenerationError(
                f"no_repeat_ngram must be an integer >= 0, got {self.no_repeat_ngram!r}"
            )

    def guard(self, decode, skip_ids: tuple[int, ...]) -> RepetitionGuard | None:
        """The repetition controls these settings ask for (``decode``: ids -> text), or None."""
        if not self.no_repeat_ngram and not self.repetition_guard:
            return None
        return RepetitionGuard(decode, self.repetition_guard, self.no_repeat_ngram, skip_ids)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fast fused kernels), nothing elsewhere (fp32 on CPU)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def decode_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask decode steps pass: ``mask`` ``(B, T + new)``, or None when no row is
    padded (then no mask is built or applied at any step: new tokens are always real)."""
    return None if bool(mask.all()) else mask


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> token_ids ``(B, T)`` left-padded, attention_mask ``(B, T)`` bool."""
    longest = max(len(p) for p in prompts)
    token_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
    for row, ids in enumerate(prompts):
        token_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, longest - len(ids) :] = True
    return token_ids, mask


def pick_next(
    logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """logits ``(B, V)`` -> next token ids ``(B,)``."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > sampling.top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def start_decode(
    model: MultimodalLM, attention_mask: torch.Tensor, max_new_tokens: int, bucket: int = 1
) -> tuple[KVCache, torch.Tensor]:
    """A KV cache for prompt + ``max_new_tokens`` and the full-length attention mask
    ``(B, T + max_new_tokens)`` (the prompt's mask, then ones); refuses an over-long request.
    ``bucket``: both lengths rounded up to a multiple of it, at most the model's context
    (compiled decoding's fixed shapes: requests of similar lengths share one compiled step)."""
    B, T = attention_mask.shape
    context = model.config.decoder.max_seq_len
    if T + max_new_tokens > context:
        raise GenerationError(
            f"prompt of {T} tokens + {max_new_tokens} new tokens exceeds the model's "
            f"context of {context} tokens"
        )
    total = min(-(-(T + max_new_tokens) // bucket) * bucket, context)
    device = attention_mask.device
    dtype = next(model.decoder.parameters()).dtype
    cache = model.decoder.new_cache(B, total, device, dtype)
    mask = torch.ones(B, total, dtype=torch.bool, device=device)
    mask[:, :T] = attention_mask
    return cache, mask


def _beams(histories: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per row, the beams ``index`` ``(B, n)`` picks of ``histories`` ``(B, K, L)`` ->
    ``(B, n, L)``."""
    return histories.gather(1, index[:, :, None].expand(-1, -1, histories.shape[-1]))


def _upto(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    return None if mask is None else mask[:, :length]


def stream_ids(
    model: MultimodalLM,
    token_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    context: MediaContext | None,
    sampling: SamplingConfig,
    stops: StopTokens,
    *,
    guard: RepetitionGuard | None = None,
    compiled: CompiledModel | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Continue left-padded prompts ``(B, T)`` one step at a time.

    Yields ``(next_ids (B,), logits (B, V))`` per step (the logits after suppression and the
    ``guard``'s repetition masks; their ``log_softmax`` gives the log-probabilities); a row
    that has emitted ``stops.eos`` yields ``stops.pad`` afterwards. Stops when every row is
    done or after ``max_new_tokens``. ``stops.never`` (e.g. padding and prompt markers) are
    never generated.
    ``compiled``: run the prompt pass and the steps through its compiled decoding
    (``mmllm.compiled``); else eagerly, on packed weights where they apply (``mmllm.packed``).
    """
    eos_id, pad_id, suppress_ids = stops.eos, stops.pad, stops.never
    decoding = compiled.decoding if compiled is not None else None
    if decoding is not None:  # prompts of similar lengths share one compiled prompt pass
        longest = model.config.decoder.max_seq_len - sampling.max_new_tokens
        token_ids, attention_mask = decoding.bucketed(token_ids, attention_mask, pad_id, longest)
        context = decoding.padded_media(context)
    B, T = token_ids.shape
    device = token_ids.device
    packed = packed_for(model.decoder) if decoding is None else None  # None: the modules
    # the modules' step: its LM head through oneDNN where that applies
    head = packed_head(model.decoder) if decoding is None and packed is None else None
    bucket = decoding.cache_bucket if decoding is not None else 1
    cache, full_mask = start_decode(model, attention_mask, sampling.max_new_tokens, bucket)
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    mask = decode_mask(full_mask)
    with autocast_for(device):
        if decoding is not None:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # as hidden() counts
            logits = decoding.prompt(token_ids, positions, full_mask, cache, context)
        else:
            hidden = model.decoder.hidden(token_ids, context, _upto(mask, T), cache=cache)
            logits = model.decoder.logits(hidden[:, -1])  # the head at the last position only
            if context is not None:
                logits = context.adjust_logits(logits, hidden[:, -1], token_ids[:, -1])
    first_position = attention_mask.sum(1)  # (B,): positions count each row's real tokens
    suppress = torch.tensor(suppress_ids, dtype=torch.long, device=device)
    if guard is not None:
        guard.start(B)
    for step in range(sampling.max_new_tokens):
        logits = logits.index_fill(-1, suppress, float("-inf")) if len(suppress_ids) else logits
        if guard is not None:
            logits = guard.mask(logits)
        next_ids = pick_next(logits, sampling, generator).masked_fill(done, pad_id)
        if guard is not None:
            guard.append(next_ids)
        yield next_ids, logits
        done |= next_ids == eos_id
        if bool(done.all()) or step + 1 == sampling.max_new_tokens:
            return
        positions, step_mask = first_position + step, _upto(mask, T + step + 1)
        with autocast_for(device):
            if decoding is not None:
                logits = decoding(next_ids, positions, T + step, full_mask, cache, context)
            elif packed is not None:
                logits, hidden = packed.step(next_ids, positions, cache, step_mask, context)
                if context is not None:
                    logits = context.adjust_logits(logits, hidden, next_ids)
            else:
                logits = _module_step(model, head, next_ids, context, step_mask, cache)


def _module_step(model, head, next_ids, context, step_mask, cache) -> torch.Tensor:
    """A decode step through the modules: next_ids ``(B,)`` -> logits ``(B, V)``; ``head``:
    the LM head as ``mmllm.packed.packed_head`` gives it (None: the decoder's own)."""
    if head is None:
        return model.decoder(next_ids[:, None], context, step_mask, cache=cache)[:, -1]
    hidden = model.decoder.hidden(next_ids[:, None], context, step_mask, cache=cache)[:, -1]
    logits = head(hidden)
    return logits if context is None else context.adjust_logits(logits, hidden, next_ids)


@torch.inference_mode()
def generate_ids(
    model: MultimodalLM,
    token_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    context: MediaContext | None,
    sampling: SamplingConfig,
    stops: StopTokens,
    *,
    guard: RepetitionGuard | None = None,
    logprobs: torch.Tensor | None = None,
    compiled: CompiledModel | None = None,
) -> torch.Tensor:
    """All new ids ``(B, max_new_tokens)`` of ``stream_ids``, ``stops.pad``-filled after EOS.
    ``logprobs`` ``(B, max_new_tokens)``, if given, is filled with each picked token's
    log-probability (0 after EOS)."""
    B, device = token_ids.shape[0], token_ids.device
    out = torch.full((B, sampling.max_new_tokens), stops.pad, dtype=torch.long, device=device)
    steps = stream_ids(
        model, token_ids, attention_mask, context, sampling, stops, guard=guard, compiled=compiled
    )
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step, (next_ids, logits) in enumerate(steps):
        out[:, step] = next_ids
        if logprobs is not None:
            picked = logits.float().log_softmax(-1).gather(1, next_ids[:, None])[:, 0]
            logprobs[:, step] = picked.masked_fill(done, 0.0)
            done |= next_ids == stops.eos
    return out


@torch.inference_mode()
def beam_search_ids(
    model: MultimodalLM,
    token_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    context: MediaContext | None,
    stops: StopTokens,
    *,
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    guard: RepetitionGuard | None = None,
    logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """The best of ``num_beams`` beams per row: the standard beam search, as transformers'.

    Each step keeps the ``2K`` best continuations of the ``K`` running beams; those that end
    (EOS, or the last step) among the best ``K`` join the row's finished hypotheses, scored
    by their summed log-probability over ``length ** length_penalty`` (0: the plain sum), and
    the best ``K`` that go on run the next step. A row stops when no running beam can beat its
    worst finished one; its best finished hypothesis is the answer. One beam is greedy
    decoding. Returns ``(B, max_new_tokens)`` like ``generate_ids`` (``stops.pad`` after the
    end), and fills ``logprobs`` likewise if given.
    """
    if not isinstance(num_beams, int) or num_beams < 1:
        raise GenerationError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if num_beams == 1:
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, repetition_guard=False)
        return generate_ids(
            model,
            token_ids,
            attention_mask,
            context,
            sampling,
            stops,
            guard=guard,
            logprobs=logprobs,
        )
    eos_id, pad_id, suppress_ids = stops.eos, stops.pad, stops.never
    B, T = token_ids.shape
    K, device, big = num_beams, token_ids.device, 1.0e9
    rows = torch.arange(B, device=device).repeat_interleave(K)  # beam b*K+k belongs to row b
    context = context.select(rows) if context is not None else None
    cache, mask = start_decode(model, attention_mask[rows], max_new_tokens)
    mask = decode_mask(mask)
    running = torch.full((B, K, max_new_tokens), pad_id, dtype=torch.long, device=device)
    running_logp = torch.zeros(B, K, max_new_tokens, device=device)
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -big  # start from one beam per row, so beams never duplicate
    finished = running.clone()
    finished_logp = running_logp.clone()
    finished_scores = torch.full((B, K), -big, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    top_k = torch.arange(2 * K, device=device) < K  # only these may finish this step
    if guard is not None:
        guard.start(B * K)
    with autocast_for(device):
        hidden = model.decoder.hidden(token_ids[rows], context, _upto(mask, T), cache=cache)
        logits = model.decoder.logits(hidden[:, -1])
        if context is not None:
            logits = context.adjust_logits(logits, hidden[:, -1], token_ids[rows, -1])
    for step in range(max_new_tokens):
        step_logp = logits.float().log_softmax(-1)  # (B*K, V)
        if suppress_ids:
            step_logp[:, list(suppress_ids)] = float("-inf")
        if guard is not None:
            step_logp = guard.mask(step_logp)
        V = step_logp.shape[-1]
        totals = (running_scores[:, :, None] + step_logp.view(B, K, V)).view(B, K * V)
        cand_scores, flat = totals.topk(2 * K, dim=-1)  # (B, 2K)
        parent, tokens = flat // V, flat % V  # (B, 2K)
        cand = _beams(running, parent)  # (B, 2K, max_new_tokens): each candidate's tokens
        cand[:, :, step] = tokens
        cand_logp = _beams(running_logp, parent)
        picked = step_logp.view(B, K, V)[
            torch.arange(B, device=device)[:, None], parent, tokens
        ]  # (B, 2K)
        cand_logp[:, :, step] = picked
        ends = (tokens == eos_id) | (step + 1 == max_new_tokens)  # (B, 2K)
        # the K best that go on
        going = cand_scores - ends.float() * big
        keep = going.topk(K, dim=-1).indices  # (B, K)
        running, running_logp = _beams(cand, keep), _beams(cand_logp, keep)
        running_scores = going.gather(1, keep)
        beam_parent = parent.gather(1, keep) + torch.arange(B, device=device)[:, None] * K
        # the ones that end among the K best join the finished hypotheses
        scored = cand_scores / ((step + 1) ** length_penalty)
        scored = scored - (~improvable).float() * big - (~(ends & top_k)).float() * big
        merged = torch.cat([finished_scores, scored], 1)  # (B, 3K)
        best = merged.topk(K, dim=-1).indices
        finished = _beams(torch.cat([finished, cand], 1), best)
        finished_logp = _beams(torch.cat([finished_logp, cand_logp], 1), best)
        is_finished = torch.cat([is_finished, ends & top_k], 1).gather(1, best)
        finished_scores = merged.gather(1, best)
        # can a running beam still beat the worst finished one?
        possible = running_scores[:, :1] / ((step + 1) ** length_penalty)
        worst = torch.where(
            is_finished,
            finished_scores.min(1, keepdim=True).values,
            torch.full_like(possible, -big),
        )
        improvable &= (possible > worst).any(-1, keepdim=True)
        if not bool(improvable.any()) or bool(ends.all()) or step + 1 == max_new_tokens:
            break
        flat_parent = beam_parent.view(-1)
        cache.reorder(flat_parent)
        next_ids = running[:, :, step].reshape(-1)
        if guard is not None:
            guard.reorder(flat_parent)
            guard.append(next_ids)
        with autocast_for(device):
            step_mask = _upto(mask, T + step + 1)
            logits = model.decoder(next_ids[:, None], context, step_mask, cache=cache)[:, -1]
    out, out_logp = finished[:, 0], finished_logp[:, 0]  # (B, max_new_tokens)
    ended = (out == eos_id).long().cumsum(1) - (out == eos_id).long() > 0  # after the end token
    out = out.masked_fill(ended, pad_id)
    if logprobs is not None:
        logprobs.copy_(out_logp.masked_fill(ended, 0.0))
    return out
