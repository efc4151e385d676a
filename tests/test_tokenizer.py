"""The BPE tokenizer: new words become single tokens, the old vocabulary keeps its ids."""

import pytest

from mmllm.errors import TextError
from mmllm.tokenizer import Tokenizer

CORPUS = ["a red circle above a blue square", "three high beeps", "a small green triangle"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=300)


def test_with_words_makes_each_word_one_token(tokenizer):
    words = [" espresso", " Labrador", "retriever", " cat", " cats"]
    assert all(len(tokenizer.encode(w)) > 1 for w in words)
    grown = tokenizer.with_words(words)
    for word in words:
        (token,) = grown.encode(word)
        assert grown.backend.id_to_token(token) == word.replace(" ", "\u0120")  # byte-level space
    text = "a photo of a dog (Labrador retriever), or maybe an espresso"
    assert grown.decode(grown.encode(text)) == text


def test_with_words_keeps_old_ids_and_the_special_tokens(tokenizer):
    grown = tokenizer.with_words([" espresso"])
    assert grown.vocab_size > tokenizer.vocab_size
    old = tokenizer.backend.get_vocab()
    assert {t: grown.backend.token_to_id(t) for t in old} == old
    assert (grown.pad_id, grown.bos_id, grown.eos_id, grown.sep_id) == (
        tokenizer.pad_id,
        tokenizer.bos_id,
        tokenizer.eos_id,
        tokenizer.sep_id,
    )
    for text in CORPUS[:3]:  # words it already had are cut as before
        assert grown.encode(text) == tokenizer.encode(text)


def test_with_words_skips_known_words_and_phrases(tokenizer):
    grown = tokenizer.with_words([" red", " hot dog"])
    assert grown.vocab_size == tokenizer.vocab_size


def test_grown_tokenizer_round_trips_through_a_file(tokenizer, tmp_path):
    grown = tokenizer.with_words([" espresso", " bison"])
    grown.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.encode(" bison espresso") == grown.encode(" bison espresso")
    with pytest.raises(TextError):
        loaded.encode("\ud800")


def test_lowercase_prompts_read_a_capitalised_prompt_as_the_model_learned_it(tokenizer, tmp_path):
    """A model trained on lower-case prompts only reads "What color is it?" (as people type it
    and as speech is transcribed) as "what color is it?"; the setting survives a save."""
    assert tokenizer.prompt_ids("What Color?") != tokenizer.prompt_ids("what color?")
    lower = Tokenizer(tokenizer.backend, lowercase_prompts=True)
    assert lower.prompt_ids("What Color?") == tokenizer.prompt_ids("what color?")
    assert lower.encode("Red") == tokenizer.encode("Red")  # targets keep their case
    lower.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.lowercase_prompts and loaded.prompt_ids("IS IT RED?") == lower.prompt_ids(
        "is it red?"
    )
    with pytest.raises(TextError):
        lower.prompt_ids("\ud800")
