"""Where cross-attention looks when the model answers: per layer and head, the entropy of the
last prompt position's attention over the media tokens and the tokens it weighs most.

    python -m scripts.probes.attention --checkpoint mmllm-tiny --image demos/examples/shapes2.png \\
        -q "what color is the circle?" -q "what color is the star?"

A model that retrieves what a question names attends differently for different questions about
the same picture. Two failures this shows: entropy near 0 nats in every head (a hard choice the
softmax passes no gradient to change), and the same tokens whatever the question names.
``--plot FILE`` draws, for an image, each layer's attention (mean over heads) on its patch grid.

``--synthetic N`` measures it over N held-out synthetic image questions instead: per question
type, how right the answers are and what share of each layer's attention (mean over heads) at
the answer position falls on the tokens of the shapes the question names, beside the share an
even look would give them::

    python -m scripts.probes.attention --checkpoint mmllm-smol --synthetic 200
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

from mmllm.data.sources import build_source
from mmllm.errors import InputError
from mmllm.eval.metrics import normalize_answer
from mmllm.processing import load_image
from mmllm.tasks import MMLLM, load
from mmllm.train.aux_losses import token_grid
from mmllm.train.image_pretrain import patch_shapes


@torch.inference_mode()
def cross_attention(mm: MMLLM, question: str, image: Any = None, audio: Any = None) -> list:
    """The attention ``(H, N_media)`` of the last prompt position, one per cross-attention layer
    in order, for ``question`` about ``image`` and/or ``audio``."""
    media = mm._media(
        [[image] if image is not None else []], [[audio] if audio is not None else []]
    )
    if media is None:
        raise InputError("cross-attention needs an image or a clip to look at")
    context, _ = mm._encode(media, 1)
    token_ids, mask = mm._prompt_batch([question.strip()])
    queries: list[torch.Tensor] = []  # per cross-attention layer, the states it queries with
    mm.model.decoder.hidden(token_ids, context, mask, cross_queries=queries)
    decoder = mm.model.decoder
    maps = []
    for i, query, kv in zip(decoder.cross_layers, queries, context.kv, strict=True):
        weights = decoder.layers[i].cross_attn.attention_weights(query, kv, context)
        maps.append(weights[0, :, -1].float())  # (H, N_media)
    return maps


def entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of ``weights`` ``(..., N)`` (probabilities)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(-1)


def report(
    mm: MMLLM,
    questions: list[str],
    image: Any = None,
    audio: Any = None,
    top: int = 3,
    maps_per_question: list[list[torch.Tensor]] | None = None,
) -> list[str]:
    """Text lines: per question, layer and head, the entropy and the most-weighed tokens
    (``maps_per_question``: the questions' :func:`cross_attention` maps, when already made)."""
    if maps_per_question is None:
        maps_per_question = [cross_attention(mm, q, image, audio) for q in questions]
    lines = []
    for question, maps in zip(questions, maps_per_question, strict=True):
        n = maps[0].shape[-1]
        lines.append(f"{question}  (uniform over {n} media tokens: {math.log(n):.2f} nats)")
        for i, weights in enumerate(maps):
            heads = []
            for h, row in enumerate(weights):
                best = row.topk(min(top, n))
                tokens = " ".join(
                    f"{j}:{p:.2f}" for p, j in zip(best.values, best.indices, strict=True)
                )
                heads.append(f"h{h} {entropy(row):.2f} [{tokens}]")
            lines.append(f"  cross-attention {i}: " + "  ".join(heads))
    return lines


def plot_attention(
    mm: MMLLM,
    questions: list[str],
    image: Any,
    out: str | Path,
    maps_per_question: list[list[torch.Tensor]] | None = None,
) -> Path:
    """A PNG: a row per question, a panel per cross-attention layer, showing the attention of
    the last prompt position (mean over heads) on the image's patch grid (``maps_per_question``
    as in :func:`report`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = mm.model.config.image.image_size // mm.model.config.image.patch_size
    rows = maps_per_question or [cross_attention(mm, q, image) for q in questions]
    if rows[0][0].shape[-1] != grid * grid:
        raise InputError(f"the attention plot needs one image's {grid}x{grid} tokens alone")
    picture = load_image(image).resize((grid * 16, grid * 16))
    fig, axes = plt.subplots(
        len(rows), len(rows[0]), figsize=(2.6 * len(rows[0]), 2.6 * len(rows)), squeeze=False
    )
    for r, (question, maps) in enumerate(zip(questions, rows, strict=True)):
        for i, weights in enumerate(maps):
            ax = axes[r][i]
            ax.imshow(picture, extent=(0, grid, grid, 0))
            heat = weights.mean(0).view(grid, grid).numpy()
            ax.imshow(heat, extent=(0, grid, grid, 0), alpha=0.6, cmap="magma", vmin=0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"layer {i}: {entropy(weights).mean():.2f} nats", fontsize=8)
        axes[r][0].set_ylabel(question, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


SYNTHETIC_IMAGE_QUESTIONS = (
    "synthetic:heldout?image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
)


def named_shares(mm: MMLLM, n: int, seed: int = 0) -> list[dict]:
    """For ``n`` held-out synthetic image questions (the picture alone: a distractor clip is
    left out), those that name shapes: ``qtype``, ``right`` (greedy answer, normalised),
    ``even`` (the named tokens' share of an even look) and ``shares`` (per cross-attention
    layer, the attention at the answer position on the named tokens, mean over heads)."""
    import numpy as np

    grid = token_grid(mm.model)
    source = build_source(SYNTHETIC_IMAGE_QUESTIONS, seed=seed)
    rows = []
    for i in range(n):
        record = source[i]
        if not record.referents[0]:  # a count of all shapes, the word: names no shape
            continue
        named = np.isin(patch_shapes(record.scenes[0], grid) - 1, sum(record.referents[0], ()))
        maps = cross_attention(mm, record.prompt, image=record.images[0])
        shares = [
            float(m[:, : grid * grid][:, torch.from_numpy(named)].sum(-1).mean()) for m in maps
        ]
        answer = mm.ask(record.images[0], record.prompt).text
        right = normalize_answer(answer) == normalize_answer(record.target)
        rows.append(dict(qtype=record.qtype, right=right, even=float(named.mean()), shares=shares))
    return rows


def share_table(rows: list[dict]) -> list[str]:
    """Markdown lines: per question type (and all), accuracy, the even share and the mean
    share on the named tokens per cross-attention layer."""
    if not rows:
        raise InputError("no synthetic question named a shape: ask for more (--synthetic N)")
    layers = len(rows[0]["shares"])
    lines = [
        "| question type | n | right | even share | "
        + " | ".join(f"L{i}" for i in range(layers))
        + " |",
        "|---" * (4 + layers) + "|",
    ]
    groups = [*sorted({r["qtype"] for r in rows}), "all"]
    for group in groups:
        chosen = [r for r in rows if group in ("all", r["qtype"])]
        per_layer = [fmean([r["shares"][i] for r in chosen]) for i in range(layers)]
        lines.append(
            f"| {group} | {len(chosen)} | {fmean([r['right'] for r in chosen]):.1%} | "
            f"{fmean([r['even'] for r in chosen]):.1%} | "
            + " | ".join(f"{s:.0%}" for s in per_layer)
            + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="folder or name (default: mmllm-tiny)")
    parser.add_argument("--image", default=None)
    parser.add_argument("--audio", default=None)
    parser.add_argument("-q", "--question", action="append", default=[])
    parser.add_argument("--plot", default=None, help="also draw the maps on the image (PNG)")
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="instead: over N held-out synthetic image questions, the attention on the shapes "
        "each names, per question type and layer",
    )
    parser.add_argument("--seed", type=int, default=0, help="with --synthetic: which questions")
    args = parser.parse_args(argv)
    if args.synthetic:
        mm = load(args.checkpoint, device="cpu")
        print("\n".join(share_table(named_shares(mm, args.synthetic, args.seed))))
        return 0
    if not args.question:
        raise InputError("give a question (-q) or --synthetic N")
    if args.plot and (args.image is None or args.audio is not None):
        raise InputError("--plot draws attention on an image: give --image and no --audio")
    mm = load(args.checkpoint, device="cpu")
    maps = [cross_attention(mm, q, args.image, args.audio) for q in args.question]
    print("\n".join(report(mm, args.question, maps_per_question=maps)))
    if args.plot:
        print(f"plot: {plot_attention(mm, args.question, args.image, args.plot, maps)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
