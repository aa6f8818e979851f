"""What a policy does, measured apart from the reward it was trained on: how a reward hack shows.

A policy that games the reward models can raise the reward while its replies get shorter, more repetitive, stop
searching or declare intents at random. So ``csrl eval`` reports, per agent, numbers the reward never saw:

- ``reply_words``: mean words per reply; ``empty_reply_rate``: turns without a reply;
- ``distinct_1`` / ``distinct_2``: distinct unigrams / bigrams over all replies, divided by their count
  (the diversity measure of Li et al., 2016, "A Diversity-Promoting Objective Function for Neural Conversation
  Models"); a policy that says the same thing everywhere scores near 0;
- ``search_rate``: turns with a ``search:`` step;
- ``intent_match``: turns whose declared intent is the conversation's labelled (or inferred) one.

>>> episodes = [{"intent": "weather", "turns": [
...     {"intent": "weather", "search": "weather Detroit", "reply": "Sunny all day."},
...     {"intent": "fraud", "search": None, "reply": "Sunny all day."}]}]
>>> behaviour(episodes)["distinct_1"], behaviour(episodes)["intent_match"], behaviour(episodes)["search_rate"]
(0.5, 0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct n-grams of words over all ``replies`` divided by their total count (0 when there are none).

    >>> distinct_n(["a b a b", "a b"], 2)
    0.5
    """
    grams = [
        tuple(words[i : i + n]) for words in (r.lower().split() for r in replies) for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def behaviour(episodes: Sequence[dict]) -> dict:
    """The measures of the module docstring over every turn of ``episodes`` (transcripts of ``play_episodes``)."""
    turns = [(episode, turn) for episode in episodes for turn in episode["turns"]]
    if not turns:
        raise ValueError("no turns to measure: play some episodes first")
    replies = [turn.get("reply") or "" for _, turn in turns]
    labelled = [(episode["intent"], turn.get("intent")) for episode, turn in turns if episode.get("intent")]
    return {
        "reply_words": round(sum(len(r.split()) for r in replies) / len(replies), 2),
        "empty_reply_rate": round(sum(not r.strip() for r in replies) / len(replies), 4),
        "distinct_1": round(distinct_n(replies, 1), 4),
        "distinct_2": round(distinct_n(replies, 2), 4),
        "search_rate": round(sum(bool(turn.get("search")) for _, turn in turns) / len(turns), 4),
        "intent_match": round(sum(a == b for a, b in labelled) / len(labelled), 4) if labelled else None,
        "turns": len(turns),
    }


__all__ = ["behaviour", "distinct_n"]
