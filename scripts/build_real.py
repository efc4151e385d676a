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
from safetensors.torch import load_file

from encoders.recognizers import COCO_OFFSET, N_LABELS, RecognizerConfig
from mmllm.base_weights import load_part, part_keys, resolve
from mmllm.checkpoint import load_tokenizer, save_checkpoint
from mmllm.config import MMConfig
from mmllm.data.label_words import coco_words, imagenet_words
from mmllm.model import MultimodalLM
from mmllm.recognition import label_table_from_words, label_word_ids
from mmllm.tasks import resolve_checkpoint


def label_token_ids(tokenizer) -> list[list[int]]:
    """Each label's word pieces: " basic name" (ImageNet), " name" (COCO): the table's
    starting word vectors."""
    ids: list[list[int]] = [[] for _ in range(N_LABELS)]
    for label, word in enumerate(imagenet_words()):
        text = word.basic if word.basic == word.name.lower() else f"{word.basic} {word.name}"
        ids[label] = tokenizer.encode(" " + text)
    for cid, word in coco_words().items():
        ids[COCO_OFFSET + cid] = tokenizer.encode(" " + word.name)
    return ids


def label_copy_ids(tokenizer) -> list[list[int]]:
    """Each label's word pieces as a caption may spell them: the everyday noun and the specific
    name, after a space or not ("a dog (Labrador retriever)"), and a COCO object's plural."""
    ids: list[list[int]] = [[] for _ in range(N_LABELS)]
    forms = [(label, (w.basic, w.name)) for label, w in enumerate(imagenet_words())]
    forms += [(COCO_OFFSET + c, (w.name, w.basic, w.plural)) for c, w in coco_words().items()]
    for label, texts in forms:
        for text in texts:
            ids[label] += tokenizer.encode(" " + text) + tokenizer.encode(text)
    return ids


def base_keys(model: MultimodalLM, config: MMConfig) -> set[str]:
    """The state-dict keys the referenced base parts provide."""
    parts = config.base.parts() if config.base else {}
    return {key for part in parts for key in part_keys(model, part)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="mmllm-smol", help="the model to add the readers to")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    folder = resolve_checkpoint(args.base)
    config = MMConfig.load(folder / "config.json")
    model = MultimodalLM(dataclasses.replace(config, recognizer=RecognizerConfig()))
    for part, ref in (config.base.parts() if config.base else {}).items():
        load_part(model, part, resolve(ref, part, folder))
    stored = load_file(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(stored, strict=False)
    new = [k for k in missing if k not in base_keys(model, config)]
    assert not unexpected and all(k.startswith("recognition.") for k in new), (unexpected, new)
    tokenizer = load_tokenizer(folder)
    with torch.no_grad():
        model.recognition.label_words.copy_(label_word_ids(label_copy_ids(tokenizer)))
    if config.recognizer is not None:  # it reads recognitions already: keep what it learnt
        save_checkpoint(model, args.out, tokenizer=tokenizer)
        print(f"wrote {args.out} from {folder}; new: {new}")
        return
    smol = model
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
