"""Build the untrained mmllm-real from mmllm-smol: the same model plus the real recognizers.

mmllm-smol's weights are kept as they are; the new part is ``RecognitionTokens``, whose label
table starts as SmolLM2's own input embedding of each label's words (ConSE), scaled to the norm
of the image tokens the cross-attention already reads. Training follows (the card's recipe).

    python scripts/build_real.py --out runs/real/init
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from encoders.recognizers import COCO_OFFSET, N_LABELS, RecognizerConfig
from mmllm.checkpoint import load_model, load_tokenizer, save_checkpoint
from mmllm.data.label_words import coco_words, imagenet_words
from mmllm.model import MultimodalLM
from mmllm.recognition import label_table_from_words
from mmllm.tasks import resolve_checkpoint


def label_token_ids(tokenizer) -> list[list[int]]:
    """Each label's word pieces: " basic name" (ImageNet), " name" (COCO)."""
    ids: list[list[int]] = [[] for _ in range(N_LABELS)]
    for label, word in enumerate(imagenet_words()):
        text = word.basic if word.basic == word.name.lower() else f"{word.basic} {word.name}"
        ids[label] = tokenizer.encode(" " + text)
    for cid, word in coco_words().items():
        ids[COCO_OFFSET + cid] = tokenizer.encode(" " + word.name)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="mmllm-smol")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    folder = resolve_checkpoint(args.base)
    smol = load_model(folder)
    tokenizer = load_tokenizer(folder)
    config = dataclasses.replace(smol.config, recognizer=RecognizerConfig())
    model = MultimodalLM(config)
    missing, unexpected = model.load_state_dict(smol.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("recognition.") for k in missing), missing
    # the image tokens' typical norm, on a grey picture
    with torch.no_grad():
        pixels = torch.zeros(1, 3, config.image.image_size, config.image.image_size)
        cells = smol.image_projector(*smol.image_encoder(pixels))[0]
        embed = smol.decoder.embed_tokens.weight
        table = label_table_from_words(embed, label_token_ids(tokenizer))
        scale = cells.norm(dim=-1).mean() / table[table.norm(dim=-1) > 0].norm(dim=-1).mean()
        model.recognition.labels.weight.copy_(table * scale)
    save_checkpoint(model, args.out, tokenizer=tokenizer)
    print(f"wrote {args.out} (label table scaled by {float(scale):.3f})")


if __name__ == "__main__":
    main()
