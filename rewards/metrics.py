"""Evaluation metrics of the trained stages: thin wrappers over scikit-learn that pin down the edge cases.

>>> round(macro_f1(["a", "a", "b"], ["a", "b", "b"]), 4)
0.6667
>>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])  # ties count one half
0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


def macro_f1(gold: Sequence, predicted: Sequence) -> float:
    """Unweighted mean F1 over the labels that occur in ``gold`` or ``predicted``; NaN when both are empty.

    A label that is never predicted correctly scores 0 (scikit-learn's ``zero_division`` never applies:
    every counted label occurs in one of the two lists).

    >>> macro_f1([1, 1, 0], [1, 1, 1])  # label 0: F1 0; label 1: 2*2 / (2*2 + 1) = 0.8
    0.4
    >>> macro_f1([], [])
    nan

    Raises:
        ValueError: ``gold`` and ``predicted`` differ in length.
    """
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise ValueError(f"got {len(gold)} gold labels but {len(predicted)} predictions; pass one prediction per label")
    if not gold:
        return float("nan")
    return float(f1_score(gold, predicted, average="macro", zero_division=0.0))


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: P(a positive outscores a negative), ties one half; NaN without both classes.

    ``labels`` are 0 (negative) or 1 (positive). With no positive or no negative (including no
    examples at all) the area is undefined and NaN is returned, where scikit-learn would raise.

    >>> roc_auc([1, 1], [0.1, 0.2])
    nan

    Raises:
        ValueError: a label other than 0 or 1, or ``labels`` and ``scores`` of different lengths.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ; pass one score per label, both 1-D")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = sorted(set(y.tolist()) - {0, 1}, key=str)[:5]
        raise ValueError(f"labels={bad} are not 0/1; pass 1 for positive, 0 for negative")
    if (y == 1).all() or (y == 0).all():
        return float("nan")
    return float(roc_auc_score(y, s))


__all__ = ["macro_f1", "roc_auc"]
