"""Build an untrained real-photo model from a shipped one: the same model plus the recognizers.

The base's weights are kept as they are; the new part is ``RecognitionTokens``, whose label
table starts as the base LM's own input embedding of each label's words (ConSE), scaled to the
norm of the image tokens the cross-attention already reads. Training follows (the card's recipe).

``--word-tokens TEACHER.jsonl`` first makes every label word and every word of the teacher
data's texts one token (``Tokenizer.with_words``): a small synthetic-world BPE spells "espresso"
in five pieces, and a decoder that names what it was shown then has to copy one word, not spell
it. New tokens start as the mean embedding of the pieces they join.

    python scripts/build_real.py --out runs/real/init
    python scripts/build_real.py --base mmllm-tiny --word-tokens runs/teacher/train.jsonl \
        --out runs/tiny-real/init
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from encoders.recognizers import COCO_OFFSET, N_LABELS, RecognizerConfig
from mmllm.config import MMConfig
from mmllm.data.label_words import coco_words, imagenet_words
from mmllm.model.multimodal import MultimodalLM
from mmllm.model.recognition import label_table_from_words, label_word_ids
from mmllm.tasks import resolve_checkpoint
from mmllm.tokenizer import Tokenizer
from mmllm.weights.base_weights import load_part, part_keys, resolve
from mmllm.weights.checkpoint import load_tokenizer, save_checkpoint
from mmllm.weights.copy_words import label_copy_ids, wire_copy_path

WORD = re.compile(r" ?[A-Za-z][A-Za-z'\-]*")  # a pre-token that is a word


def label_and_teacher_words(tokenizer: Tokenizer, teacher: Path) -> list[str]:
    """Every word (with its leading space where it has one) of the label names and of the
    teacher data's captions, questions and answers."""
    texts = []
    for word in [*imagenet_words(), *coco_words().values()]:
        for text in (word.name, word.basic, word.plural):
            texts += [" " + text, "(" + text, text]
    with teacher.open() as lines:
        for line in lines:
            record = json.loads(line)
            texts += [record[k] for k in ("caption", "question", "answer") if record.get(k)]
    split = tokenizer.backend.pre_tokenizer.pre_tokenize_str
    pieces = {piece.replace("\u0120", " ") for text in texts for piece, _ in split(text)}
    return sorted(p for p in pieces if WORD.fullmatch(p))


@torch.no_grad()
def grow_vocabulary(model: MultimodalLM, old: Tokenizer, new: Tokenizer) -> MultimodalLM:
    """``model`` (tied embeddings) with a row for each token ``new`` adds to ``old``: the mean
    of the rows of the old pieces that make it."""
    embed = model.decoder.embed_tokens
    assert model.decoder.lm_head is None, "only tied embeddings are grown"
    rows = [embed.weight]
    for token in range(old.vocab_size, new.vocab_size):
        pieces = old.backend.model.tokenize(new.backend.id_to_token(token))
        rows.append(embed.weight[[piece.id for piece in pieces]].mean(0, keepdim=True))
    weight = torch.cat(rows)
    model.decoder.embed_tokens = torch.nn.Embedding.from_pretrained(weight, freeze=False)
    decoder = dataclasses.replace(model.config.decoder, vocab_size=new.vocab_size)
    model.config = dataclasses.replace(model.config, decoder=decoder)
    model.decoder.config = decoder
    return model


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


def base_keys(model: MultimodalLM, config: MMConfig) -> set[str]:
    """The state-dict keys the referenced base parts provide."""
    parts = config.base.parts() if config.base else {}
    return {key for part in parts for key in part_keys(model, part)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="mmllm-smol", help="the model to add the readers to")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--word-tokens", type=Path, help="teacher data whose words to add")
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
    if args.word_tokens:
        grown = tokenizer.with_words(label_and_teacher_words(tokenizer, args.word_tokens))
        model, tokenizer = grow_vocabulary(model, tokenizer, grown), grown
    with torch.no_grad():
        model.recognition.label_words.copy_(label_word_ids(label_copy_ids(tokenizer)))
    wire_copy_path(model.recognition, tokenizer)
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
