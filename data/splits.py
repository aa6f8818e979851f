"""Seeded, stable train / validation / test splits by conversation.

A conversation's split depends only on its id and the seed (a hash, not a shuffle), so adding
or removing other conversations never moves it: a test conversation stays a test conversation.

>>> split_of("star-1042", seed=0) in SPLITS
True
>>> split_of("star-1042", seed=0) == split_of("star-1042", seed=0)
True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter

from csrl.data.schema import SPLITS, Conversation

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")


def split_of(conversation_id: str, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """The split of one conversation: a uniform draw from a hash of ``seed`` and its id."""
    _check_fractions(fractions)
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return SPLITS[0]
    return SPLITS[1] if u < fractions[0] + fractions[1] else SPLITS[2]


def assign_splits(
    conversations: list[Conversation], seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> list[Conversation]:
    """Give every conversation without a ``split`` label one; labels from the logs are kept."""
    _check_fractions(fractions)
    return [
        c if c.split is not None else dataclasses.replace(c, split=split_of(c.id, seed, fractions))
        for c in conversations
    ]


def by_split(conversations: list[Conversation], split: str) -> list[Conversation]:
    """The conversations of one split (after :func:`assign_splits`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return [c for c in conversations if c.split == split]


def split_counts(conversations: list[Conversation]) -> dict[str, int]:
    """Conversations per split, every split named (0 where empty)."""
    counts = Counter(c.split for c in conversations)
    return {s: counts.get(s, 0) for s in SPLITS}
