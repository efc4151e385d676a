"""Repetition controls: they mask exactly the tokens that would start a loop."""

import torch

from mmllm.eval.degenerate import degenerate_reason
from mmllm.generate import SamplingConfig, generate_ids
from mmllm.repetition import (
    RepetitionGuard,
    banned_ngram_ids,
    glues_word_to_itself,
    looping_ids,
    makes_a_loop,
)

PIECES = ["<eos>", "<pad>", " a", " red", " square", "square", " one", "no", " no", " circle", "s"]
EOS, PAD = 0, 1


def decode(ids):
    return "".join(PIECES[i] for i in ids if i > PAD)


def test_word_rules_catch_the_failures_users_saw():
    assert glues_word_to_itself("a red square", "square")
    assert glues_word_to_itself("a red squaresq", "uare")
    assert glues_word_to_itself("nono", "no")
    assert makes_a_loop("one one", " one")
    # and leave ordinary words alone
    assert not glues_word_to_itself("a red square", "s")
    assert not glues_word_to_itself("a big", "ger")
    assert not glues_word_to_itself("a red", " red")
    assert not makes_a_loop("one", " one")
    assert not makes_a_loop("a red circle and a red", " square")
    assert makes_a_loop("a red square, a red square, a red", " square")
    assert not makes_a_loop("a red square, a red circle, a red", " square")


def test_loop_rule_bans_the_token_that_ends_a_third_copy():
    assert looping_ids([7, 7]) == {7}
    assert looping_ids([1, 2, 1, 2, 1]) == {2}
    assert looping_ids([5, 1, 2, 3, 1, 2, 3, 1, 2]) == {3}
    assert looping_ids([1, 2, 1, 2]) == set()  # twice is not a loop yet
    # a list that repeats a pattern with other words is not a loop
    assert looping_ids([9, 4, 5, 1, 9, 4, 5, 2, 9, 4]) == set()


def test_degenerate_definition_tells_loops_from_lists():
    assert degenerate_reason("a large red squaresquare")
    assert degenerate_reason("there is one one one")
    assert degenerate_reason("red and blue red and blue red and blue")
    assert not degenerate_reason("a large green square, a large green star, a large green cross")
    assert not degenerate_reason("a small red circle and a small red circle")


def test_ngram_rule_bans_the_token_that_would_repeat_a_4gram():
    assert banned_ngram_ids([1, 2, 3, 4, 1, 2, 3], 4) == {4}
    assert banned_ngram_ids([1, 2, 3, 4, 5, 2, 3], 4) == set()
    assert banned_ngram_ids([1, 2], 4) == set()


def test_guard_masks_only_the_looping_candidates():
    guard = RepetitionGuard(decode, skip_ids=(EOS, PAD))
    guard.start(2)
    guard.append(torch.tensor([2, 7]))  # " a" | "no"
    guard.append(torch.tensor([3, 7]))  # " a red" | "nono"
    guard.append(torch.tensor([4, 10]))  # " a red square" | "nonos"
    logits = torch.zeros(2, len(PIECES))
    logits[:, 5] = 5.0  # "square" is the most likely next piece for both rows
    masked = guard.mask(logits)
    assert masked[0, 5] == float("-inf")  # "squaresquare"
    assert masked[1, 5] == 5.0  # "nonossquare" glues nothing to itself
    assert torch.isfinite(masked[0, :5]).all() and torch.isfinite(masked[0, 6:]).all()


def test_sampling_config_builds_no_guard_when_both_rules_are_off():
    assert SamplingConfig(repetition_guard=False).guard(decode, ()) is None
    assert SamplingConfig().guard(decode, ()) is not None


def test_guarded_generation_never_degenerates(tiny_checkpoint):
    """Random tiny models loop; with the controls on their text is never degenerate, and a
    greedy text that did not loop is unchanged."""
    import mmllm

    api = mmllm.load(tiny_checkpoint)
    tok, model = api.tokenizer, api.model
    raw = SamplingConfig(max_new_tokens=40, repetition_guard=False)
    guarded = SamplingConfig(max_new_tokens=40)
    looped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.decoder.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        prompts = torch.tensor([tok.prompt_ids(f"what is {seed}?")])
        mask = torch.ones_like(prompts, dtype=torch.bool)
        free = generate_ids(model, prompts, mask, None, raw, tok.stops)[0].tolist()
        guard = guarded.guard(tok.decode, (tok.eos_id, tok.pad_id))
        kept = generate_ids(model, prompts, mask, None, guarded, tok.stops, guard=guard)[0].tolist()
        free_text, kept_text = (
            tok.decode([t for t in ids if t > tok.pad_id]) for ids in (free, kept)
        )
        assert degenerate_reason(kept_text) is None, kept_text
        if degenerate_reason(free_text) is None and not _loops(free):
            assert kept == free
        else:
            looped += 1
    assert looped, "no seed looped: the test shows nothing"


def _loops(ids):
    ids = [t for t in ids if t > 3]  # not <pad> <bos> <eos> <sep>
    return any(ids[i] in looping_ids(ids[:i]) for i in range(len(ids)))
