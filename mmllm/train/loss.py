"""The training objective around a ``MultimodalLM``: next-token cross-entropy on the labelled
positions, and the optional image losses of ``mmllm.train.aux_losses``.

Logits are computed only where a label is predicted, which spares the LM head's cost on
prompts and padding. Two options change how the batch is computed, not what it learns:
- ``per_example``: each sample's labelled tokens weigh 1 / their count, so a one-word
  answer counts as much as a caption;
- ``length_groups`` > 1: the decoder runs on up to that many groups of rows of similar
  length (``mmllm.train.grouping``), each cut to its longest labelled row and its media to
  their longest, so it computes little padding. The loss and gradients stay the same up to
  rounding.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.data.collate import IGNORE_INDEX
from mmllm.model.cache import MediaContext
from mmllm.model.media import IMAGE, MediaBatch
from mmllm.model.multimodal import MultimodalLM
from mmllm.train import aux_losses
from mmllm.train.grouping import length_groups
from mmllm.train.image_pretrain import patch_cross_entropy


class TrainingLoss(nn.Module):
    """``(token_ids (B, T), media, labels (B, T)[, patch_targets])`` -> losses (a dict).

    ``labels`` align with ``token_ids`` (shifted inside); ``IGNORE_INDEX`` where no loss is
    taken. With ``head`` (``aux_losses.PatchHead``), ``patch_weight`` x its per-cell image
    loss and ``attend_weight`` x the attention loss join the total; ``patch_targets`` ``(n_images,
    N, n_groups + 1)`` come from ``aux_losses.image_targets``, in the order of ``media.pixels``.
    Returns ``loss`` (the total, to backpropagate) and ``patch`` and ``attend`` (detached, for
    logging; 0 when unused or when the batch has nothing for them).
    """

    def __init__(
        self,
        model: MultimodalLM,
        per_example: bool = False,
        length_groups: int = 1,
        head: aux_losses.PatchHead | None = None,
        patch_weight: float = 0.0,
        attend_weight: float = 0.0,
    ):
        super().__init__()
        self.model, self.head = model, head
        self.per_example, self.length_groups = per_example, length_groups
        self.patch_weight, self.attend_weight = patch_weight, attend_weight

    def forward(
        self,
        token_ids: torch.Tensor,
        media: MediaBatch | None,
        labels: torch.Tensor,
        patch_targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        model = self.model
        has_media = media is not None and not media.is_empty
        pieces = model.media_pieces(media) if has_media else []
        encoded = model.media_packer(pieces, media.batch_size) if has_media else None
        named = None  # the questions that name shapes, for the attention loss
        images = has_media and media.pixels is not None
        if self.attend_weight and patch_targets is not None and images:
            named = aux_losses.named_questions(patch_targets, media.image_index, labels)
        bias = None  # the recognized labels' word bias of the whole batch, computed once
        if encoded is not None and model.recognition is not None:
            bias = model.with_word_bias(MediaContext.of([], encoded[1]), media).word_bias
        parts, looks = [], []  # per group: logits, targets, weights; per named question
        for rows, n in self._groups(labels):
            logits, look = self._group(token_ids, media, labels, encoded, bias, rows, n, named)
            parts.append(logits)
            looks.extend(look)
        logits, targets, weights = (torch.cat(t) for t in zip(*parts, strict=True))
        if self.per_example:
            per_token = F.cross_entropy(logits.float(), targets, reduction="none")  # (N,)
            examples = (labels[:, 1:] != IGNORE_INDEX).any(1).sum().clamp(min=1)
            loss = (per_token * weights).sum() / examples
        else:
            loss = F.cross_entropy(logits.float(), targets)
        zero = loss.new_zeros(())
        patch = attend = zero
        if self.head is not None:
            patch = self._patch_loss(pieces, patch_targets)
            loss = loss + self.patch_weight * patch
        if looks:
            attend = aux_losses.attend_loss(looks, named)
            loss = loss + self.attend_weight * attend
        return {"loss": loss, "patch": patch.detach(), "attend": attend.detach()}

    def _groups(self, labels: torch.Tensor) -> list[tuple[torch.Tensor | None, int]]:
        """Each group's rows (sorted by length) and the tokens they need, or ``[(None, T)]``:
        the whole batch as one."""
        if self.length_groups <= 1:
            return [(None, labels.shape[1])]
        labelled = labels != IGNORE_INDEX
        positions = torch.arange(labels.shape[1], device=labels.device)
        # a row needs its tokens up to its last label (0: no label, no loss: left out)
        lengths = torch.where(labelled, positions + 1, 0).amax(1)  # (B,)
        groups = length_groups(lengths, self.length_groups)
        return [(rows, int(lengths[rows].max())) for rows in groups] or [(None, labels.shape[1])]

    def _group(self, token_ids, media, labels, encoded, bias, rows, n, named):
        """One group's labelled logits, targets and weights, and what its cross-attention
        layers show the named questions among its rows (``aux_losses.attention_shares``)."""
        model = self.model
        context = None
        if rows is None:
            if encoded is not None:
                context = model.decoder.prepare_media(*encoded)
                context = model.with_word_bias(context, media, bias)
        else:  # the group's rows, cut to the ``n`` tokens its longest labelled row needs
            token_ids, labels = token_ids[rows, :n], labels[rows, :n]
            if encoded is not None:
                tokens, mask = encoded[0][rows], encoded[1][rows]  # media are left-aligned
                n_media = max(1, int(mask.sum(1).max()))
                context = model.decoder.prepare_media(tokens[:, :n_media], mask[:, :n_media])
                context = dataclasses.replace(context, rows=rows)
                context = model.with_word_bias(context, media, bias)
        queries = [] if named is not None and context is not None else None
        hidden = model.decoder.hidden(token_ids, context, cross_queries=queries)
        looks = []
        if queries:
            looks = aux_losses.attention_shares(model.decoder, queries, context, named, rows)
        return labelled_logits(model, hidden, token_ids, labels, context), looks

    def _patch_loss(self, pieces, patch_targets) -> torch.Tensor:
        """The per-cell image loss of the batch's projected image cells (0 without images)."""
        images = [tokens for kind, tokens, _, _ in pieces if kind == IMAGE]
        if not images or patch_targets is None:  # keeps the head in the graph (DDP)
            return sum(p.sum() for p in self.head.parameters()) * 0.0
        cells = images[0][:, : patch_targets.shape[1]]  # (n, N, D): before recognition tokens
        targets = patch_targets[..., : aux_losses.NAMED].to(cells.device)
        return patch_cross_entropy(self.head(cells), targets)


def labelled_logits(
    model: MultimodalLM,
    hidden: torch.Tensor,
    token_ids: torch.Tensor,
    labels: torch.Tensor,
    context: MediaContext | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden ``(B, T, D)`` of token_ids ``(B, T)``, labels ``(B, T)`` -> the logits ``(N, V)``
    at the N positions that predict a label, those labels ``(N,)`` and each one's 1 / its
    row's label count."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX  # (B, T-1)
    states = hidden[:, :-1][keep]  # (N, D)
    logits = model.decoder.logits(states)  # (N, V)
    if context is not None:
        previous = token_ids[:, :-1][keep]  # (N,): the token each position reads last
        logits = context.adjust_logits(logits, states, previous, keep.nonzero()[:, 0])
    counts = keep.sum(1, keepdim=True)  # (B, 1)
    weights = (1.0 / counts.clamp(min=1)).expand_as(keep)[keep]  # (N,)
    return logits, targets[keep], weights
