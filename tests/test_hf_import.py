"""Published Hugging Face models in our runtime give transformers' logits and tokens.

Each model here is a tiny random one built by transformers (offline, in seconds), with weights
spread wide enough (``spread``) that a wrong mapping or a wrong step shows in the tokens.
"""

import argparse
import json

import pytest
import torch
import transformers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

import mmllm
from mmllm.errors import ConfigError, InputError, TextError
from mmllm.generate import SamplingConfig, beam_search_ids, generate_ids, left_pad
from mmllm.model.media import MediaBatch
from mmllm.tokenizer import StopTokens
from mmllm.weights.build import add_build_parser
from mmllm.weights.hf_import import convert, is_hf_folder, save_imported
from tests.conftest import TINY_HF_VIT

EOT = "<|endoftext|>"
TEXTS = ["a cat on a mat", "a dog in the park", "two birds flying over the sea"] * 20
NEW = 32  # new tokens per comparison


def gpt2_tokenizer(folder) -> int:
    """A GPT-2-style byte-level BPE (one ``<|endoftext|>`` that begins and ends) saved as
    ``folder/tokenizer.json``; returns its vocabulary size."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=160,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS, trainer=trainer)
    backend.save(str(folder / "tokenizer.json"))
    return backend.get_vocab_size()


def spread(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Random weights of std ``std`` (LayerNorm scales around 1): outputs that vary by input."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    p.copy_(1 + 0.3 * torch.randn_like(p))
                else:
                    p.copy_(std * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def ved(tmp_path_factory):
    """A tiny VisionEncoderDecoderModel (ViT + GPT-2, widths differ: ``enc_to_dec_proj``)
    saved as a Hugging Face folder: (folder, model, end token id)."""
    folder = tmp_path_factory.mktemp("ved")
    vocab = gpt2_tokenizer(folder)
    encoder = transformers.ViTConfig(**TINY_HF_VIT)
    decoder = transformers.GPT2Config(
        n_embd=48, n_layer=2, n_head=4, vocab_size=vocab, n_positions=64, bos_token_id=0
    )
    decoder.eos_token_id = decoder.bos_token_id
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = 0
    hf = spread(transformers.VisionEncoderDecoderModel(config))
    hf.save_pretrained(folder)
    (folder / "generation_config.json").write_text(
        json.dumps(
            {"decoder_start_token_id": 0, "eos_token_id": 0, "max_length": 16, "num_beams": 4}
        )
    )
    return folder, hf, 0


def bert_tokenizer(folder) -> HFTokenizer:
    """A BERT-style WordPiece (lower-cased) with BLIP's ``[DEC]`` begin token, saved as
    ``folder/tokenizer.json``."""
    backend = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    trainer = trainers.WordPieceTrainer(
        vocab_size=150, special_tokens=specials, show_progress=False
    )
    backend.train_from_iterator(TEXTS, trainer=trainer)
    backend.save(str(folder / "tokenizer.json"))
    return backend


def save_blip(folder, architecture, vision_width: int, std: float = 0.2):
    """A tiny BLIP of ``architecture`` (text 48 wide, vision ``vision_width``) saved in
    ``folder`` beside a BERT-style tokenizer: (model, its special tokens' ids)."""
    backend = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    ids = {n: backend.token_to_id(n) for n in ("[PAD]", "[CLS]", "[SEP]", "[DEC]")}
    vision = transformers.BlipVisionConfig(**{**TINY_HF_VIT, "hidden_size": vision_width})
    text = transformers.BlipTextConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        encoder_hidden_size=vision_width,
        max_position_embeddings=64,
        bos_token_id=ids["[DEC]"],
        sep_token_id=ids["[SEP]"],
        eos_token_id=ids["[SEP]"],
        pad_token_id=ids["[PAD]"],
    )
    config = transformers.BlipConfig(vision_config=vision.to_dict(), text_config=text.to_dict())
    config.architectures = [architecture.__name__]
    hf = spread(architecture(config), std)
    hf.save_pretrained(folder)
    return hf, ids


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    """A tiny BlipForConditionalGeneration (vision 32 wide, text 48: the cross-attention reads
    another width) saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("blip")
    bert_tokenizer(folder)
    hf, ids = save_blip(folder, transformers.BlipForConditionalGeneration, vision_width=32)
    return folder, hf, ids["[DEC]"]


@pytest.fixture(scope="module")
def ved_bert(tmp_path_factory):
    """A tiny VisionEncoderDecoderModel of a ViT and a BERT decoder (``BertLMHeadModel``, with
    token types and BERT's head; widths differ) saved as a Hugging Face folder: (folder,
    model, start token, end token, padding)."""
    folder = tmp_path_factory.mktemp("ved_bert")
    backend = bert_tokenizer(folder)
    start, end, pad = (backend.token_to_id(n) for n in ("[CLS]", "[SEP]", "[PAD]"))
    encoder = transformers.ViTConfig(**TINY_HF_VIT)
    decoder = transformers.BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=pad,
    )
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, end, pad
    hf = spread(transformers.VisionEncoderDecoderModel(config))
    hf.save_pretrained(folder)
    return folder, hf, start, end, pad


@pytest.fixture(scope="module")
def ours(ved):
    return convert(ved[0])


@pytest.fixture(scope="module", params=["vit-gpt2", "vit-bert", "blip"])
def family(request, ved, ved_bert, blip):
    """(converted model, transformers' model, start token, end token, padding, generate(row,
    image, **kwargs) as transformers runs it for one row)."""
    if request.param == "vit-gpt2":
        folder, hf, start = ved
        return convert(folder), hf, start, start, start, ved_generate(hf)
    if request.param == "vit-bert":
        folder, hf, start, end, pad = ved_bert
        return convert(folder), hf, start, end, pad, ved_generate(hf)
    folder, hf, start = blip
    text = hf.config.text_config
    return convert(folder), hf, start, text.sep_token_id, text.pad_token_id, blip_generate(hf)


def ved_generate(hf):
    def generate(row, image, **kwargs):
        ids = torch.tensor([row])
        with torch.no_grad():
            if image is None:  # the decoder alone: no encoder states, no cross-attention
                out = hf.decoder.generate(ids, max_new_tokens=NEW, **kwargs)
            else:
                out = hf.generate(
                    pixel_values=image[None], decoder_input_ids=ids, max_new_tokens=NEW, **kwargs
                )
        return out[0, len(row) :].tolist()

    return generate


def blip_generate(hf):
    def generate(row, image, eos_token_id=None, pad_token_id=None, **kwargs):
        text = hf.config.text_config  # its generate passes its own padding token
        end = text.sep_token_id
        if eos_token_id is not None:  # BLIP's generate ends at its separator: make it this
            text.sep_token_id = eos_token_id
        try:
            with torch.no_grad():
                if image is None:  # the text decoder alone
                    out = hf.text_decoder.generate(
                        torch.tensor([row]),
                        max_new_tokens=NEW,
                        eos_token_id=text.sep_token_id,
                        **kwargs,
                    )
                else:  # BLIP drops the last prompt token (its [SEP]) and starts with [DEC]
                    out = hf.generate(
                        pixel_values=image[None],
                        input_ids=torch.tensor([[*row, end]]),
                        max_new_tokens=NEW,
                        **kwargs,
                    )
        finally:
            text.sep_token_id = end
        return out[0, len(row) :].tolist()

    return generate


def pixels(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))


def prompts(batch: int, vocab: int, start: int) -> list[list[int]]:
    """``batch`` prompts of 1, 2, ... tokens: the decoder's start token, then text."""
    g = torch.Generator().manual_seed(batch)
    return [[start, *torch.randint(1, vocab, (r,), generator=g).tolist()] for r in range(batch)]


def test_logits_on_a_fixed_batch_agree_with_transformers(family):
    imported, hf, *_ = family
    vocab = imported.model.config.decoder.vocab_size
    token_ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    images = pixels(2)
    with torch.no_grad():
        media = MediaBatch.from_lists(images=[[images[0]], [images[1]]])
        got = imported.model(token_ids, media)
        if isinstance(hf, transformers.BlipForConditionalGeneration):
            want = hf(pixel_values=images, input_ids=token_ids).logits
        else:
            want = hf(pixel_values=images, decoder_input_ids=token_ids).logits
    assert (got - want).abs().max() <= 1e-4


def run_ours(model, rows, images, stops, beams: int = 1) -> list[list[int]]:
    """Our batched generation over left-padded ``rows`` (with one image each, or none)."""
    token_ids, mask = left_pad(rows, stops.pad)
    context = None
    if images is not None:
        context = model.prepare_media(MediaBatch.from_lists(images=[[x] for x in images]))
    with torch.no_grad():
        if beams == 1:
            sampling = SamplingConfig(max_new_tokens=NEW, repetition_guard=False)
            out = generate_ids(model, token_ids, mask, context, sampling, stops)
        else:
            out = beam_search_ids(
                model, token_ids, mask, context, stops, num_beams=beams, max_new_tokens=NEW
            )
    return out.tolist()


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("with_images", [True, False], ids=["images", "text"])
def test_greedy_tokens_equal_transformers(family, batch, with_images):
    imported, _, start, end, pad, generate = family
    rows = prompts(batch, imported.model.config.decoder.vocab_size, start)
    images = pixels(batch) if with_images else None
    # the end token banned on both sides, so that all 32 tokens are compared
    stops = StopTokens(eos=end, pad=pad, never=(end,))
    got = run_ours(imported.model, rows, images, stops)
    for r, row in enumerate(rows):
        image = None if images is None else images[r]
        want = generate(row, image, min_new_tokens=NEW, do_sample=False)
        assert got[r] == want and len(set(want)) > 1


@pytest.mark.parametrize("batch", [1, 4])
def test_beam_search_equals_transformers(family, batch):
    """4 beams, length penalty 1 (transformers' default), with an end token that ends some
    beams early: the finished hypotheses are kept and compared as transformers does."""
    imported, _, start, end, pad, generate = family
    rows = prompts(batch, imported.model.config.decoder.vocab_size, start)
    images = pixels(batch)
    greedy = run_ours(imported.model, rows, images, StopTokens(eos=-1, pad=pad, never=(end,)))
    every = [t for row in greedy for t in row]
    stop = max(set(every), key=every.count)  # the token the model produces most: beams end at it
    got = run_ours(imported.model, rows, images, StopTokens(stop, pad, (end,)), beams=4)
    ended = 0
    for r, row in enumerate(rows):
        want = generate(
            row, images[r], num_beams=4, eos_token_id=stop, pad_token_id=pad,
            bad_words_ids=[[end]], do_sample=False,
        )  # fmt: skip
        assert got[r][: len(want)] == want
        assert all(t == pad for t in got[r][len(want) :])  # padding after the end
        ended += len(want) < NEW
    assert ended  # some row did end early


def test_the_converted_checkpoint_saves_loads_and_captions(ved, ours, tmp_path):
    folder, hf, start = ved
    saved = save_imported(ours, tmp_path / "ckpt", folder)
    assert is_hf_folder(folder) and not is_hf_folder(saved)
    roles = json.loads((saved / "tokenizer_roles.json").read_text())
    assert roles["bos"] == roles["eos"] == EOT and roles["sep"] is None
    assert json.loads((saved / "generation.json").read_text()) == {
        "max_new_tokens": 15,
        "num_beams": 4,
    }
    for source in (saved, folder):  # a checkpoint, or the Hugging Face folder converted in memory
        api = mmllm.load(source, device="cpu")
        assert api.tokenizer.prompt_ids("") == [start]
        token_ids = torch.tensor([[start, 5, 9]])
        with torch.no_grad():
            want = hf(pixel_values=pixels(1), decoder_input_ids=token_ids).logits
            media = MediaBatch.from_lists(images=[[pixels(1)[0]]])
            assert (api.model(token_ids, media) - want).abs().max() <= 1e-4
        caption = api.caption(torch.rand(3, 40, 40))
        assert isinstance(caption, str) and caption.confidence is not None
        streamed = api.stream_caption(torch.rand(3, 40, 40), max_new_tokens=6)
        assert "".join(streamed) == streamed.result


def test_other_architectures_are_refused_by_name(tmp_path):
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="'bert' model \\(BertModel\\)"):
        convert(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "blip", "architectures": ["BlipForImageTextRetrieval"]})
    )
    with pytest.raises(ConfigError, match="BlipForImageTextRetrieval; mmllm imports BLIP"):
        convert(tmp_path)


# -- GPT-2 as the LM of `mmllm build`, and plain continuations ---------------------------------
@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    vocab = gpt2_tokenizer(folder)
    config = transformers.GPT2Config(
        n_embd=48, n_layer=2, n_head=4, vocab_size=vocab, n_positions=64, bos_token_id=0
    )
    config.eos_token_id = 0
    hf = spread(transformers.GPT2LMHeadModel(config))
    hf.save_pretrained(folder)
    return folder, hf


def build(lm, out) -> None:
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers(dest="command"))
    argv = ["build", "--lm", str(lm), "--image", "none", "--audio", "none", "--out", str(out)]
    args = parser.parse_args(argv)
    assert args.func(args) == 0


def test_build_takes_a_gpt2_whose_begin_token_is_its_end_token(gpt2, tmp_path):
    build(gpt2[0], tmp_path / "ckpt")
    roles = json.loads((tmp_path / "ckpt/tokenizer_roles.json").read_text())
    assert roles["bos"] == roles["eos"] == EOT and roles["sep"] is None
    api = mmllm.load(tmp_path / "ckpt", device="cpu")
    ids = torch.randint(1, api.tokenizer.vocab_size, (2, 12), generator=torch.Generator())
    with torch.no_grad():
        assert (api.model(ids) - gpt2[1](ids).logits).abs().max() <= 1e-4  # gates at 0


@pytest.mark.parametrize("text", ["a cat on", "two birds flying over the"])
def test_a_raw_continuation_equals_transformers_greedy_gpt2(gpt2, tmp_path_factory, text):
    out = tmp_path_factory.mktemp("built") / "ckpt"
    build(gpt2[0], out)
    api = mmllm.load(out, device="cpu")
    ids = api.tokenizer.raw_ids(text)
    got = api.generate(text, max_new_tokens=16, raw=True, repetition_guard=False)
    with torch.no_grad():
        want = (
            gpt2[1]
            .generate(
                torch.tensor([ids]),
                max_new_tokens=16,
                do_sample=False,
                eos_token_id=0,
                pad_token_id=0,
            )[0, len(ids) :]
            .tolist()
        )
    want = want[: want.index(0)] if 0 in want else want
    assert str(got) == api.tokenizer.decode(want)
    with pytest.raises(TextError, match="prompt is empty"):
        api.generate("", raw=True)


def test_blip_converts_saves_loads_and_captions_with_a_text_prefix(blip, tmp_path):
    folder, hf, start = blip
    saved = save_imported(convert(folder), tmp_path / "ckpt", folder)
    roles = json.loads((saved / "tokenizer_roles.json").read_text())
    assert (roles["bos"], roles["eos"], roles["sep"]) == ("[DEC]", "[SEP]", None)
    api = mmllm.load(saved, device="cpu")
    prefix = api.tokenizer.prompt_ids("a picture of")
    assert prefix[0] == start and len(prefix) > 2  # [DEC] then the prefix's word pieces
    token_ids = torch.tensor([prefix])
    with torch.no_grad():
        want = hf(pixel_values=pixels(1), input_ids=token_ids).logits
        media = MediaBatch.from_lists(images=[[pixels(1)[0]]])
        assert (api.model(token_ids, media) - want).abs().max() <= 1e-4
    assert isinstance(api.caption(torch.rand(3, 40, 40), max_new_tokens=6), str)
    text = api.generate("a picture of", images=[torch.rand(3, 40, 40)], max_new_tokens=6)
    assert isinstance(text, str) and text.confidence is not None


def test_the_command_line_takes_an_imported_model(ved, tmp_path, capsys):
    """caption, ask and alt-text on a Hugging Face folder (converted in memory) and on its
    converted checkpoint."""
    from PIL import Image

    from mmllm.cli import main

    folder = ved[0]
    assert main(["convert", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    picture = tmp_path / "photo.png"
    Image.new("RGB", (48, 40), (200, 40, 40)).save(picture)
    page = tmp_path / "page.md"
    page.write_text(f"![]({picture.name})\n")
    for source in (folder, tmp_path / "ckpt"):
        capsys.readouterr()
        assert main(["caption", str(picture), "--checkpoint", str(source), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["file"] == str(picture) and row["confidence"] is not None
        assert main(["ask", str(picture), "-q", "what is it?", "--checkpoint", str(source)]) == 0
        assert main(["alt-text", str(page), "--checkpoint", str(source)]) == 0
    assert page.read_text() == f"![]({picture.name})\n"  # a dry run writes nothing


def test_captions_follow_the_model_s_generation_defaults(ved):
    """The converted model's own ``num_beams`` (4) and ``max_new_tokens`` (15) are what
    ``caption`` uses unless told otherwise."""
    api = mmllm.load(ved[0], device="cpu")
    assert api.generation == {"max_new_tokens": 15, "num_beams": 4}
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(5))
    prompt = api._caption_prompt(has_image=True)
    for beams, tokens in ((4, 15), (1, 6)):
        sampling = SamplingConfig(max_new_tokens=tokens)
        want = api.generate_batch([prompt], [[image]], None, sampling, num_beams=beams)[0]
        got = api.caption(image) if beams == 4 else api.caption(image, 8, 6, num_beams=1)
        assert str(got) == str(want)


# -- BLIP VQA: a question encoder reads the question with the picture ------------------------
@pytest.fixture(scope="module")
def blip_vqa(tmp_path_factory):
    """A tiny BlipForQuestionAnswering (vision and text 48 wide, as BLIP's decoder reads the
    question encoder's states with the vision width) saved as a Hugging Face folder, with a
    tokenizer that wraps a question in [CLS] ... [SEP] as BLIP's processor does."""
    folder = tmp_path_factory.mktemp("blip_vqa")
    backend = bert_tokenizer(folder)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    backend.save(str(folder / "tokenizer.json"))
    # std 0.1: at 0.2 this decoder, started from [DEC] alone, repeats one token
    hf, ids = save_blip(folder, transformers.BlipForQuestionAnswering, vision_width=48, std=0.1)
    return folder, hf, ids


def questions(batch: int, vocab: int, ids: dict) -> list[list[int]]:
    """``batch`` questions of 1, 3, 5, ... word pieces, each as [CLS] ... [SEP]."""
    g = torch.Generator().manual_seed(batch + 10)
    return [
        [ids["[CLS]"], *torch.randint(6, vocab, (2 * r + 1,), generator=g).tolist(), ids["[SEP]"]]
        for r in range(batch)
    ]


def vqa_context(model, images, rows):
    """Our decoder's context for ``rows`` (questions, left-padded into one batch) about
    ``images``."""
    tokens, mask = model.encode_media(MediaBatch.from_lists(images=[[x] for x in images]))
    question_ids, question_mask = left_pad(rows, 0)
    return model.question_context(tokens, mask, question_ids, question_mask)


def vqa_generate(hf, row, image, eos_token_id=None, **kwargs) -> list[int]:
    """transformers' answer to one question ``row`` about ``image`` (new tokens only; its
    generate ends at the separator: made ``eos_token_id`` for the call where one is given)."""
    text = hf.config.text_config
    end = text.sep_token_id
    text.sep_token_id = end if eos_token_id is None else eos_token_id
    try:
        with torch.no_grad():
            out = hf.generate(
                input_ids=torch.tensor([row]),
                pixel_values=image[None],
                max_new_tokens=NEW,
                **kwargs,
            )
    finally:
        text.sep_token_id = end
    return out[0, 1:].tolist()  # after its [DEC]


def test_blip_vqa_logits_agree_with_transformers(blip_vqa):
    folder, hf, ids = blip_vqa
    model = convert(folder).model
    assert model.question_encoder is not None and not model.config.question_encoder.causal
    vocab = model.config.decoder.vocab_size
    rows = questions(2, vocab, ids)
    answer = torch.randint(6, vocab, (2, 5), generator=torch.Generator().manual_seed(3))
    answer[:, 0] = ids["[DEC]"]
    images = pixels(2)
    with torch.no_grad():
        got = model.decoder(answer, vqa_context(model, images, rows))
        for r, row in enumerate(rows):  # transformers, one question at a time (no padding)
            seen = hf.vision_model(pixel_values=images[r : r + 1]).last_hidden_state
            asked = hf.text_encoder(
                input_ids=torch.tensor([row]), encoder_hidden_states=seen
            ).last_hidden_state
            want = hf.text_decoder(input_ids=answer[r : r + 1], encoder_hidden_states=asked).logits
            assert (got[r : r + 1] - want).abs().max() <= 1e-4


@pytest.mark.parametrize("batch", [1, 4])
def test_blip_vqa_greedy_and_beam_answers_equal_transformers(blip_vqa, batch):
    """32 greedy tokens (the end token banned on both sides) and 4-beam answers that end at
    the token the model produces most, for ragged questions batched together."""
    folder, hf, ids = blip_vqa
    model = convert(folder).model
    rows = questions(batch, model.config.decoder.vocab_size, ids)
    images = pixels(batch)
    end, pad = ids["[SEP]"], ids["[PAD]"]
    start, start_mask = torch.full((batch, 1), ids["[DEC]"]), torch.ones(batch, 1, dtype=torch.bool)
    with torch.no_grad():
        context = vqa_context(model, images, rows)
        sampling = SamplingConfig(max_new_tokens=NEW, repetition_guard=False)
        never = StopTokens(eos=-1, pad=pad, never=(end,))
        greedy = generate_ids(model, start, start_mask, context, sampling, never).tolist()
        every = [t for row in greedy for t in row]
        stop = max(set(every), key=every.count)
        beams = beam_search_ids(
            model, start, start_mask, context, StopTokens(stop, pad, (end,)), num_beams=4,
            max_new_tokens=NEW,
        ).tolist()  # fmt: skip
    for r, row in enumerate(rows):
        want = vqa_generate(hf, row, images[r], min_new_tokens=NEW, bad_words_ids=[[end]])
        assert greedy[r] == want and len(set(want)) > 1
        want = vqa_generate(
            hf, row, images[r], eos_token_id=stop, num_beams=4, bad_words_ids=[[end]]
        )
        assert beams[r][: len(want)] == want


def test_blip_vqa_answers_through_the_api_and_does_not_caption(blip_vqa, tmp_path):
    folder = blip_vqa[0]
    saved = save_imported(convert(folder), tmp_path / "ckpt", folder)
    api = mmllm.load(saved, device="cpu")
    assert api.model.config.question_encoder is not None  # kept in the checkpoint's config
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(2))
    answer = api.ask(image, "a cat on a mat?")
    assert isinstance(answer.text, str) and 0 <= answer.confidence <= 1
    with pytest.raises(InputError, match="does not caption"):
        api.caption(image)
    with pytest.raises(InputError, match="give an image"):
        api.ask(question="a cat on a mat?")


# -- Llama 3.2 Vision: its language model, then the whole model with its tiled vision ----------
MLLAMA_VOCAB = 100
IMAGE_TOKEN = MLLAMA_VOCAB + 7  # one of the 8 embedding rows past the head's vocabulary
MLLAMA_TEXT = dict(  # cross-attention layers 1 and 3 of 4
    vocab_size=MLLAMA_VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    cross_attention_layers=[1, 3],
    max_position_embeddings=96,
    pad_token_id=99,
    bos_token_id=1,
    eos_token_id=2,
)


def spread_mllama(hf: torch.nn.Module) -> None:
    """``spread`` for Llama 3.2 Vision, by parameter name (its norms are RMSNorms), with every
    gate set open: they start closed (0), and then nothing would be compared."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(("_gate", ".gate")):
                p.fill_(0.7)
            else:
                p.copy_(0.2 * torch.randn_like(p))


@pytest.fixture(scope="module")
def mllama():
    """A tiny MllamaForCausalLM (cross-attention layers 1 and 3 of 4, gates open) and our
    decoder holding its weights."""
    from mmllm.model.decoder import Decoder
    from mmllm.weights.mllama import mllama_text_config, mllama_text_state_dict

    config = transformers.MllamaTextConfig(**MLLAMA_TEXT)
    torch.manual_seed(0)
    hf = transformers.MllamaForCausalLM(config).eval()
    spread_mllama(hf)
    ours = mllama_text_config(config.to_dict(), image_token_id=IMAGE_TOKEN)
    decoder = Decoder(ours).eval()
    decoder.load_state_dict(mllama_text_state_dict(hf.state_dict(), ours, "tiny"), strict=True)
    return hf, decoder


def mllama_logits(hf, ids: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
    """transformers' logits for one row ``ids (1, T)``: text from the image token on reads
    the image (its processor's cross-attention mask), text before it does not."""
    from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

    if states is None:
        return hf(input_ids=ids).logits
    reads = ((ids == IMAGE_TOKEN).cumsum(1) > 0).float()[:, :, None, None]  # (1, T, 1, 1)
    mask, rows = _prepare_cross_attention_mask(reads, states.shape[1], torch.float32)
    return hf(
        input_ids=ids,
        cross_attention_states=states,
        cross_attention_mask=mask,
        full_text_row_masked_out_mask=rows,
    ).logits


def test_mllama_language_model_logits_agree_with_transformers(mllama):
    hf, decoder = mllama
    ids = torch.randint(3, MLLAMA_VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[:, 1] = 1, IMAGE_TOKEN  # begin, then the image: the begin token reads none
    states = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        context = decoder.prepare_media(states, torch.ones(2, 5, dtype=torch.bool))
        for b in range(2):
            want = mllama_logits(hf, ids[b : b + 1], states[b : b + 1])
            assert (decoder(ids, context)[b] - want[0]).abs().max() <= 1e-4
        text = ids[:, 2:]  # without an image, the cross-attention layers are skipped whole
        assert (decoder(text) - hf(input_ids=text).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("with_images", [True, False], ids=["images", "text"])
def test_mllama_greedy_tokens_equal_transformers(mllama, batch, with_images):
    """32 greedy tokens through our cache (ragged rows left-padded) against transformers'
    full forward at every step."""
    from types import SimpleNamespace

    hf, decoder = mllama
    g = torch.Generator().manual_seed(batch)
    rows = [
        [1, IMAGE_TOKEN, *torch.randint(3, MLLAMA_VOCAB, (r + 1,), generator=g).tolist()]
        if with_images
        else [1, *torch.randint(3, MLLAMA_VOCAB, (r + 2,), generator=g).tolist()]
        for r in range(batch)
    ]
    states = torch.randn(batch, 5, 32, generator=g) if with_images else None
    model = SimpleNamespace(decoder=decoder, config=SimpleNamespace(decoder=decoder.config))
    token_ids, mask = left_pad(rows, 0)
    context = None
    if states is not None:
        context = decoder.prepare_media(states, torch.ones(batch, 5, dtype=torch.bool))
    sampling = SamplingConfig(max_new_tokens=NEW, repetition_guard=False)
    with torch.no_grad():
        got = generate_ids(model, token_ids, mask, context, sampling, StopTokens(-1, 0)).tolist()
        for r, row in enumerate(rows):
            ids = torch.tensor([row])
            for _ in range(NEW):
                step = mllama_logits(hf, ids, None if states is None else states[r : r + 1])
                ids = torch.cat([ids, step[:, -1:].argmax(-1)], 1)
            want = ids[0, len(row) :].tolist()
            assert got[r] == want and len(set(want)) > 1


MLLAMA_VISION = dict(  # tiles of 28 px, at most 2 per picture
    hidden_size=32,
    num_hidden_layers=2,
    num_global_layers=1,
    attention_heads=4,
    intermediate_size=64,
    vision_output_dim=64,
    image_size=28,
    patch_size=14,
    max_num_tiles=2,
    supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
    intermediate_layers_indices=[0],
)


def mllama_tokenizer(folder) -> None:
    """A BPE whose ids 1 and 2 begin and end, grown to the head's 100 tokens, then 8 special
    tokens past it with ``<|image|>`` last (id 107), saved as ``folder/tokenizer.json``."""
    backend = HFTokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=MLLAMA_VOCAB, special_tokens=specials)
    backend.train_from_iterator(TEXTS, trainer=trainer)
    backend.add_tokens([f"filler{i}" for i in range(MLLAMA_VOCAB - backend.get_vocab_size())])
    backend.add_special_tokens([f"<|reserved{i}|>" for i in range(7)] + ["<|image|>"])
    assert backend.token_to_id("<|image|>") == IMAGE_TOKEN
    backend.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def mllama_folder(tmp_path_factory):
    """A tiny MllamaForConditionalGeneration (tiles of 28 px, at most 2; cross-attention
    layers 1 and 3 of 4, gates open) saved as a Hugging Face folder with its tokenizer and
    image processor: (folder, model)."""
    folder = tmp_path_factory.mktemp("mllama")
    mllama_tokenizer(folder)
    config = transformers.MllamaConfig(
        vision_config=transformers.MllamaVisionConfig(**MLLAMA_VISION).to_dict(),
        text_config=transformers.MllamaTextConfig(**MLLAMA_TEXT).to_dict(),
        image_token_index=IMAGE_TOKEN,
    )
    torch.manual_seed(0)
    hf = transformers.MllamaForConditionalGeneration(config).eval()
    spread_mllama(hf)
    hf.save_pretrained(folder)
    transformers.MllamaImageProcessor(
        size={"height": 28, "width": 28}, max_image_tiles=2
    ).save_pretrained(folder)
    return folder, hf


def tiled_pictures(n: int) -> list:
    """``n`` pictures of three shapes: wide (two tiles side by side), tall, and square."""
    from PIL import Image

    g = torch.Generator().manual_seed(n)
    sizes = [(50, 26), (26, 50), (28, 28)]
    return [
        Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).byte().numpy())
        for w, h in (sizes[i % 3] for i in range(n))
    ]


def mllama_inputs(folder, picture, length: int, image_at: int = 1) -> dict:
    """transformers' inputs for one picture read by a row of ``length`` tokens: its image
    processor's tiles, and the text from ``image_at`` on reading every real tile."""
    out = transformers.MllamaImageProcessor.from_pretrained(folder)(
        images=[[picture]], return_tensors="pt"
    )
    reads = torch.zeros(1, length, 1, 2, dtype=torch.long)
    reads[:, image_at:, 0, : int(out["num_tiles"][0][0])] = 1
    return {
        "pixel_values": out["pixel_values"],
        "aspect_ratio_ids": out["aspect_ratio_ids"],
        "aspect_ratio_mask": out["aspect_ratio_mask"],
        "cross_attention_mask": reads,
    }


def test_mllama_converts_with_its_tiled_vision_and_gives_transformers_logits(mllama_folder):
    from mmllm.processing import ImageProcessor

    folder, hf = mllama_folder
    imported = convert(folder)
    model, tokenizer = imported.model, imported.tokenizer
    assert tokenizer.prompt_ids("") == [IMAGE_TOKEN, 1]  # <|image|><|begin_of_text|>
    tiles = [ImageProcessor(model.config.image).pixels(x) for x in tiled_pictures(3)]
    assert [t.aspect_ratio_id for t in tiles] == [2, 3, 1]  # 1x2, 2x1 and 1x1 tiles
    token_ids = torch.randint(3, MLLAMA_VOCAB, (3, 9), generator=torch.Generator().manual_seed(4))
    token_ids[:, 0], token_ids[:, 1] = IMAGE_TOKEN, 1
    with torch.no_grad():
        got = model(token_ids, MediaBatch.from_lists(images=[[t] for t in tiles]))
        for r, picture in enumerate(tiled_pictures(3)):
            inputs = mllama_inputs(folder, picture, 9, image_at=0)
            assert torch.equal(inputs["pixel_values"][0, 0], tiles[r].tiles)
            want = hf(input_ids=token_ids[r : r + 1], **inputs).logits
            assert (got[r] - want[0]).abs().max() <= 1e-4


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("batch", [1, 4])
def test_mllama_generation_equals_transformers(mllama_folder, batch, beams):
    """transformers' own generate (its cache, masks, beams) against ours on ragged rows with
    tiled pictures: 32 greedy tokens, and 4 beams ending at a frequent token."""
    from mmllm.processing import ImageProcessor

    folder, hf = mllama_folder
    model = convert(folder).model
    g = torch.Generator().manual_seed(7 + batch)
    rows = [
        [1, IMAGE_TOKEN, *torch.randint(3, 90, (r + 1,), generator=g).tolist()]
        for r in range(batch)
    ]
    pictures = tiled_pictures(batch)
    tiles = [ImageProcessor(model.config.image).pixels(x) for x in pictures]
    token_ids, mask = left_pad(rows, 0)
    with torch.no_grad():
        context = model.prepare_media(MediaBatch.from_lists(images=[[t] for t in tiles]))
        sampling = SamplingConfig(max_new_tokens=NEW, repetition_guard=False)
        greedy = generate_ids(model, token_ids, mask, context, sampling, StopTokens(-1, 0))

        def theirs(r: int, **kwargs) -> list[int]:
            inputs = mllama_inputs(folder, pictures[r], len(rows[r]))
            out = hf.generate(
                input_ids=torch.tensor([rows[r]]), max_new_tokens=NEW, do_sample=False,
                **inputs, **kwargs,
            )  # fmt: skip
            return out[0, len(rows[r]) :].tolist()

        if beams == 1:
            for r in range(batch):
                want = theirs(r, min_new_tokens=NEW, num_beams=1)
                assert greedy[r].tolist() == want and len(set(want)) > 1
            return
        every = greedy.flatten().tolist()
        end = max(set(every), key=every.count)
        got = beam_search_ids(
            model, token_ids, mask, context, StopTokens(end, 0), num_beams=4, max_new_tokens=NEW
        ).tolist()
        for r in range(batch):
            want = theirs(r, num_beams=4, eos_token_id=end, pad_token_id=0)
            assert got[r][: len(want)] == want and all(t == 0 for t in got[r][len(want) :])


def test_mllama_captions_and_answers_through_the_api(mllama_folder, tmp_path):
    folder = mllama_folder[0]
    saved = save_imported(convert(folder), tmp_path / "ckpt", folder)
    api = mmllm.load(saved, device="cpu")
    picture = tiled_pictures(1)[0]
    caption = api.caption(picture, max_new_tokens=6)
    assert isinstance(caption, str) and caption.confidence is not None
    assert isinstance(api.ask(picture, "a cat on a mat?").text, str)


def test_mllama_prompts_through_its_chat_template(mllama_folder, tmp_path):
    """An instruct model's prompt is its chat template's user turn (the image, then the text)
    up to the assistant's answer."""
    import shutil

    folder = shutil.copytree(mllama_folder[0], tmp_path / "instruct")
    template = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|image|>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|end_of_text|>{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    config = {
        "chat_template": template,
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|reserved3|>",  # ends a turn, as an instruct model's <|eot_id|>
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    ends = [2, IMAGE_TOKEN - 4]  # the generation config lists two; the tokenizer names one
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ends}))
    tokenizer = convert(folder).tokenizer
    assert tokenizer.prompt_template == (
        "<|begin_of_text|>[user]<|image|>{prompt}<|end_of_text|>[assistant]"
    )
    ids = tokenizer.prompt_ids("a cat")
    assert ids[0] == 1 and IMAGE_TOKEN in ids
    assert tokenizer.eos_id == IMAGE_TOKEN - 4  # <|reserved3|>


def test_the_demo_lists_and_runs_an_imported_model(ved, tmp_path):
    """A Hugging Face folder given to the demo is a choice of its model list, and answers."""
    pytest.importorskip("gradio")
    from PIL import Image

    from demos.app import ModelCache, find_checkpoints, respond

    folder = ved[0]
    found = find_checkpoints([str(folder)])
    name = next(n for n, path in found.items() if path == str(folder))
    picture = tmp_path / "photo.png"
    Image.new("RGB", (48, 40), (200, 40, 40)).save(picture)
    models = ModelCache(found, lambda path: mmllm.load(path, device="cpu"))
    for mode, question in (("Caption", ""), ("Ask", "what is it?")):
        *_, (text, _, confidence) = respond(
            models, name, mode, str(picture), None, question, "", 8, 0.0, 1.0, 125
        )
        assert text and "confidence" in confidence.lower()
