"""The training objective (``mmllm.train.loss``): the same loss however the batch is computed."""

import pytest
import torch
import torch.nn.functional as F

from mmllm.data.collate import IGNORE_INDEX
from mmllm.train.grouping import length_groups
from mmllm.train.loss import TrainingLoss
from tests.conftest import flat_grads, open_gates, tiny_config


@pytest.fixture(params=[False, True], ids=["plain", "qk_norm"])
def config(request):
    return tiny_config(cross_attn_qk_norm=request.param)


def full_logits_loss(model, token_ids, media, labels) -> torch.Tensor:
    """The plain next-token loss from every position's logits: the reference."""
    logits = model(token_ids, media)[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def test_logits_at_labelled_positions_only_give_the_same_loss_and_gradients(
    model, media, token_ids
):
    open_gates(model.train())
    labels = token_ids.clone()
    labels[:, :5] = IGNORE_INDEX  # the prompt
    labels[2, 9:] = IGNORE_INDEX  # padding
    losses, grads = [], []
    for loss_of in (full_logits_loss, lambda *a: TrainingLoss(model)(*a[1:])["loss"]):
        model.zero_grad()
        loss = loss_of(model, token_ids, media, labels)
        loss.backward()
        losses.append(loss.detach())
        grads.append(flat_grads(model))
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("per_example", [False, True], ids=["per_token", "per_example"])
def test_length_groups_give_the_same_loss_and_gradients(model, media, token_ids, per_example):
    open_gates(model.train())
    labels = token_ids.clone()
    labels[:, :5] = IGNORE_INDEX  # the prompt
    labels[0, 7:] = IGNORE_INDEX  # right padding: rows of 7, 12 and 9 tokens
    labels[2, 9:] = IGNORE_INDEX
    losses, grads = [], []
    for groups in (1, 2, 3):
        model.zero_grad()
        loss = TrainingLoss(model, per_example, groups)(token_ids, media, labels)["loss"]
        loss.backward()
        losses.append(loss.detach())
        grads.append(flat_grads(model))
    for loss, grad in zip(losses[1:], grads[1:], strict=True):
        torch.testing.assert_close(loss, losses[0])
        torch.testing.assert_close(grad, grads[0], atol=1e-6, rtol=1e-4)


def test_length_groups_cut_where_the_fewest_positions_are_computed():
    lengths = torch.tensor([30, 5, 0, 6, 31, 5])
    groups = [g.tolist() for g in length_groups(lengths, 2)]
    assert groups == [[1, 5, 3], [0, 4]]  # 3 x 6 + 2 x 31 positions; row 2 (no label) in none
    assert [g.tolist() for g in length_groups(lengths, 1)] == [[1, 5, 3, 0, 4]]
    assert len(length_groups(torch.tensor([4, 4, 4]), 3)) == 1  # equal rows: one group
    assert length_groups(torch.tensor([0, 0]), 2) == []


def test_loss_per_example_weighs_each_sample_equally(model, media, token_ids):
    open_gates(model)
    labels = token_ids.clone()
    labels[:, :5] = IGNORE_INDEX
    labels[0, 7:] = IGNORE_INDEX  # sample 0: 2 labelled tokens; the others: 7
    logits = model(token_ids, media)[:, :-1]
    per_sample = [
        F.cross_entropy(logits[b], labels[b, 1:], ignore_index=IGNORE_INDEX) for b in range(3)
    ]
    loss = TrainingLoss(model, per_example=True)(token_ids, media, labels)["loss"]
    torch.testing.assert_close(loss, torch.stack(per_sample).mean())
    token_mean = TrainingLoss(model)(token_ids, media, labels)["loss"]
    assert not torch.allclose(loss, token_mean)
