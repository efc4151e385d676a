"""What a model's image tokens still say: linear probes for what each patch shows.

    python -m scripts.probes.token_probe --checkpoint mmllm-tiny \\
        --pretrained runs/tiny/image-pretrain/image_encoder.safetensors

For each of the image pretraining's per-patch targets (``mmllm.train.image_pretrain``: colour,
kind and size of the shape a patch shows, the bin of that shape's centre), a linear classifier is
fitted on the tokens of fresh training scenes and scored on held-out ones, over the patches that
show a shape. Three places are probed: the pretrained encoder (if given), the trained model's
encoder, and its tokens after the projector (what cross-attention reads). A fact the pretraining
taught but the trained tokens lost is one the decoder can no longer find.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from encoders.image import ImageEncoder
from mmllm.model.multimodal import MultimodalLM
from mmllm.tasks import load
from mmllm.train.image_pretrain import PATCH_GROUPS, SceneBatches
from mmllm.weights.checkpoint import check_state_dict

PROBED = tuple(g for g in PATCH_GROUPS if g != "word")  # what a shape's patches show


def _scenes(config, split: str, batches: int, seed: int):
    """pixels ``(n, 3, S, S)`` and per-patch targets ``(n, N, len(PATCH_GROUPS))``."""
    data = SceneBatches(config, 64, seed, split)
    items = [data[i] for i in range(batches)]
    return torch.cat([x[0] for x in items]), torch.cat([x[3] for x in items])


def probe_accuracy(
    train: torch.Tensor,
    train_y: torch.Tensor,
    test: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    steps: int = 300,
) -> float:
    """Held-out accuracy of a linear softmax classifier fitted on ``train`` ``(n, D)``."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    linear = torch.nn.Linear(train.shape[1], n_classes)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(linear(train), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (linear(test).argmax(-1) == test_y).float().mean().item()


def _places(model: MultimodalLM, pretrained: ImageEncoder | None):
    """name -> pixels ``(B, 3, S, S)`` -> tokens ``(B, N, D)``."""

    def encoded(pixels):
        return model.image_encoder(pixels)[0]

    def projected(pixels):
        return model.image_projector(*model.image_encoder(pixels))[0]

    places = {"trained encoder": encoded, "after the projector": projected}
    if pretrained is not None:
        places = {"pretrained encoder": lambda pixels: pretrained(pixels)[0], **places}
    return places


def token_probes(
    model: MultimodalLM,
    pretrained: ImageEncoder | None = None,
    train_batches: int = 30,
    test_batches: int = 8,
    seed: int = 5,
) -> dict[str, dict[str, float]]:
    """place -> target -> held-out probe accuracy over the patches that show a shape."""
    config = model.config.image
    train_px, train_t = _scenes(config, "train", train_batches, seed)
    test_px, test_t = _scenes(config, "heldout", test_batches, seed)
    shown_train = train_t[..., 0].flatten() > 0  # colour 0: the patch shows no shape
    shown_test = test_t[..., 0].flatten() > 0
    groups = list(PATCH_GROUPS)
    scores: dict[str, dict[str, float]] = {}
    for place, tokens_of in _places(model.eval(), pretrained).items():
        with torch.no_grad():
            train_x = tokens_of(train_px).flatten(0, 1)[shown_train]
            test_x = tokens_of(test_px).flatten(0, 1)[shown_test]
        scores[place] = {}
        for name in PROBED:
            i = groups.index(name)
            scores[place][name] = probe_accuracy(
                train_x,
                train_t[..., i].flatten()[shown_train],
                test_x,
                test_t[..., i].flatten()[shown_test],
                PATCH_GROUPS[name],
            )
    return scores


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="folder or name (default: mmllm-tiny)")
    parser.add_argument("--pretrained", default=None, help="image_encoder.safetensors to compare")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load(args.checkpoint, device="cpu").model
    pretrained = None
    if args.pretrained:
        pretrained = ImageEncoder(model.config.image)
        state = load_file(args.pretrained)
        check_state_dict(pretrained, state, args.pretrained)  # names what does not fit
        pretrained.load_state_dict(state)
        pretrained.eval()
    scores = token_probes(model, pretrained)
    print("| tokens | " + " | ".join(PROBED) + " |")
    print("|---|" + "---|" * len(PROBED))
    for place, row in scores.items():
        print(f"| {place} | " + " | ".join(f"{100 * row[n]:.1f}%" for n in PROBED) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
