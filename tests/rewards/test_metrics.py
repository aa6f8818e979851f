"""Evaluation metrics: hand-computed macro-F1 and ROC AUC tables, and the edge cases the wrappers pin down."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csrl.rewards.metrics import macro_f1, roc_auc


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        (["a", "a", "b"], ["a", "b", "b"], 2 / 3),  # a: 2*1/(2+0+1); b: 2*1/(2+1+0)
        ([1, 1, 0], [1, 1, 1], 0.4),  # 0: never right -> 0; 1: 2*2/(4+1+0) = 0.8
        ([0, 1, 2, 2], [0, 2, 2, 2], 0.6),  # 0: 1; 1: 0; 2: 2*2/(4+1+0) = 0.8
        (["a", "a"], ["a", "c"], 1 / 3),  # a label only predicted counts too: a 2/3, c 0
        (["a", "b"], ["b", "a"], 0.0),
        (["x", "x", "x"], ["x", "x", "x"], 1.0),  # one class, all right
        ((0, 1, 1), np.array([0, 1, 1]), 1.0),  # any sequences
    ],
)
def test_macro_f1_table(gold, predicted, expected):
    assert macro_f1(gold, predicted) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_of_nothing_is_nan():
    assert math.isnan(macro_f1([], []))


def test_macro_f1_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        macro_f1(["a", "b"], ["a"])


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 1], [0.2, 0.8], 1.0),
        ([0, 1], [0.8, 0.2], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: half credit for every pair
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of the 4 (positive, negative) pairs in order
        ([0, 1, 1], [0.5, 0.5, 0.9], 0.75),  # (0.5 vs 0.5) = 1/2, (0.9 vs 0.5) = 1
        ([1, 0, 0, 1], [0.6, 0.6, 0.2, 0.1], 0.375),  # 0.6: 1/2 + 1; 0.1: 0 + 0 -> 1.5 / 4
        ([False, True], [0.1, 0.9], 1.0),  # booleans are 0/1
        (np.array([0, 1, 1]), np.array([0.25, 0.75, 0.25], np.float32), 0.75),  # predict_proba's dtype
    ],
)
def test_roc_auc_table(labels, scores, expected):
    assert roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("labels", "scores"), [([1, 1], [0.1, 0.2]), ([0, 0, 0], [0.1, 0.2, 0.3]), ([], [])])
def test_roc_auc_without_both_classes_is_nan(labels, scores):
    assert math.isnan(roc_auc(labels, scores))


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 2], [0.1, 0.2], r"labels=\[2\] are not 0/1"),
        ([-1, 1], [0.1, 0.2], r"labels=\[-1\] are not 0/1"),
        ([0, 1, 1], [0.1, 0.2], "one score per label"),
    ],
)
def test_roc_auc_refuses_bad_input(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        roc_auc(labels, scores)
