import dataclasses

import pytest

from csrl.data import Conversation, Turn, assign_splits, split_counts, split_of


def _conv(i: int, split: str | None = None) -> Conversation:
    return Conversation(id=f"c{i}", turns=(Turn("customer", "Hi"), Turn("agent", "Hello")), split=split)


def test_split_depends_only_on_id_and_seed():
    convs = [_conv(i) for i in range(2000)]
    first = {c.id: c.split for c in assign_splits(convs, seed=3)}
    # dropping half the corpus or reordering it moves no conversation
    again = {c.id: c.split for c in assign_splits(convs[::-2], seed=3)}
    assert all(first[k] == v for k, v in again.items())
    other_seed = {c.id: c.split for c in assign_splits(convs, seed=4)}
    assert sum(first[k] != other_seed[k] for k in first) > 300


def test_split_fractions_are_respected():
    counts = split_counts(assign_splits([_conv(i) for i in range(5000)], fractions=(0.6, 0.2, 0.2)))
    assert counts["train"] == pytest.approx(3000, abs=150)
    assert counts["validation"] == pytest.approx(1000, abs=100)


def test_existing_split_labels_are_kept():
    conv = _conv(1, split="test")
    assert assign_splits([conv])[0] is conv
    unsplit = dataclasses.replace(conv, split=None)
    assert assign_splits([unsplit])[0].split == split_of("c1")


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="three non-negative numbers summing to 1"):
        split_of("c1", fractions=fractions)
