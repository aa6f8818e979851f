"""Shared head code: training-set guards, seeded subsampling, the encoder check and the fit loop."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from csrl.rewards.heads import check_encoder, check_training_set, fit_head, subsample


@pytest.mark.parametrize(
    ("n_texts", "n_labels", "distinct", "message"),
    [
        (3, 2, 2, "got 3 texts but 2 labels"),
        (0, 0, 0, "empty"),
        (4, 4, 1, "same label"),
    ],
)
def test_check_training_set_refuses(n_texts, n_labels, distinct, message):
    with pytest.raises(ValueError, match=message):
        check_training_set(n_texts, n_labels, distinct)


def test_check_training_set_accepts_two_labels():
    check_training_set(4, 4, 2)


@pytest.mark.parametrize(
    ("n", "max_examples", "seed", "expected"),
    [
        (5, 10, 0, [0, 1, 2, 3, 4]),  # everything, in order, no random draw
        (3, 3, 7, [0, 1, 2]),
        (100, 10, 0, [1, 3, 7, 17, 25, 29, 47, 58, 77, 81]),  # pins the seeded stream
    ],
)
def test_subsample_table(n, max_examples, seed, expected):
    assert subsample(n, max_examples, seed).tolist() == expected


def test_subsample_is_sorted_distinct_and_seeded():
    a = subsample(1000, 50, seed=3)
    assert len(a) == 50 and len(set(a.tolist())) == 50 and (np.diff(a) > 0).all()
    assert a.tolist() == subsample(1000, 50, seed=3).tolist()
    assert a.tolist() != subsample(1000, 50, seed=4).tolist()


def test_check_encoder_refuses_another_encoder():
    saved = {"encoder": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384}
    check_encoder(saved, SimpleNamespace(name=saved["encoder"], dim=384), "run/intent")
    with pytest.raises(ValueError, match=r"run/intent was trained on encoder .*TextEncoder\('sentence-transformers"):
        check_encoder(saved, SimpleNamespace(name="some/other-model", dim=384), "run/intent")
    with pytest.raises(ValueError, match="dim 384"):
        check_encoder(saved, SimpleNamespace(name=saved["encoder"], dim=768), "run/intent")


def _config(**overrides):
    return SimpleNamespace(**({"lr": 1e-2, "weight_decay": 1e-4, "seed": 0, "epochs": 5, "batch_size": 16} | overrides))


def _blobs():
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=generator)
    x = torch.randn(64, 3, generator=generator) + 2 * y[:, None]  # (64, 3): two separable blobs
    return x, y


def test_fit_head_trains_deterministically_and_reports_each_epoch():
    x, y = _blobs()

    def train():
        torch.manual_seed(0)
        head = torch.nn.Linear(3, 2)
        initial = [p.detach().clone() for p in head.parameters()]
        losses = fit_head(head, x, y, torch.nn.CrossEntropyLoss(), _config())
        return head, initial, losses

    head, initial, losses = train()
    assert len(losses) == 5 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(initial, head.parameters(), strict=True))
    assert not head.training, "the head comes back in eval mode"
    again, _, losses_again = train()
    assert losses_again == losses
    assert all(torch.equal(a, b) for a, b in zip(head.parameters(), again.parameters(), strict=True))


def test_fit_head_raises_when_training_diverges():
    x, y = _blobs()

    def nan_loss(logits, target):
        return (logits * float("nan")).sum()

    with pytest.raises(FloatingPointError, match="lower lr=0.01"):
        fit_head(torch.nn.Linear(3, 2), x, y, nan_loss, _config(epochs=1))


def test_ranking_term_learns_an_order_the_labels_do_not_show():
    # labels are coin flips; only the pairs say "higher feature 0 is better"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=generator)
    y = torch.randint(0, 2, (400,), generator=generator).float()
    pairs = torch.tensor([(i, i + 1) if x[i, 0] > x[i + 1, 0] else (i + 1, i) for i in range(0, 400, 2)])
    config = _config(epochs=30, lr=1e-2, batch_size=64)

    def pairwise_accuracy(ranking_weight):
        torch.manual_seed(0)
        head = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
        fit_head(head, x, y, torch.nn.BCEWithLogitsLoss(), config, ranking_pairs=pairs, ranking_weight=ranking_weight)
        with torch.no_grad():
            return (head(x[pairs[:, 0]]) > head(x[pairs[:, 1]])).float().mean().item()

    assert pairwise_accuracy(3.0) > 0.9
    assert pairwise_accuracy(0.0) < 0.75


@pytest.mark.parametrize("n_classes", [2, 4])
def test_a_linear_head_is_scikit_learns_logistic_regression(n_classes):
    from sklearn.linear_model import LogisticRegression

    from csrl.rewards.heads import fit_linear_softmax

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=generator)
    y = x[:, :n_classes].argmax(dim=1) if n_classes > 2 else (x[:, 0] > 0).long()  # learnable classes
    linear = torch.nn.Linear(8, n_classes)
    fit_linear_softmax(linear, x, y, c=10.0)
    expected = LogisticRegression(C=10.0, max_iter=1000).fit(x.numpy(), y.numpy()).predict_proba(x.numpy())
    with torch.no_grad():
        proba = torch.softmax(linear(x), dim=-1).numpy()
    assert np.allclose(proba, expected, atol=1e-5)
    missing = torch.nn.Linear(8, 3)  # class 2 has no example: never predicted
    fit_linear_softmax(missing, x, (x[:, 0] > 0).long(), c=1.0)
    with torch.no_grad():
        assert torch.softmax(missing(x), dim=-1)[:, 2].max() < 1e-6
    with pytest.raises(ValueError, match="at least 2 classes, got 1"):
        fit_linear_softmax(torch.nn.Linear(8, 2), x, torch.zeros(200, dtype=torch.long), c=1.0)
