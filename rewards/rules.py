"""Rule-based reward components: cheap checks of the reply's form. Weight 0 by default.

Each is a tiny pure function of the reply (and the dialogue so far), in [0, 1], 1 = no problem.

>>> length_score("Could I get your full name, please?")
1.0
>>> length_score("")
0.0
>>> repetition_score("Your balance is 200 dollars.", ["Hello, how can I help?"])
1.0
>>> repetition_score("Hello, how can I help?", ["Hello, how can I help?"])
0.0
>>> format_score("reply without an intent", declared_intent=None)
0.5
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from csrl.rewards.context import TurnContext

_WORD = re.compile(r"\w+", re.UNICODE)


def length_score(reply: str, min_words: int = 2, max_words: int = 60) -> float:
    """1 inside ``[min_words, max_words]`` words, falling linearly to 0 at none or twice the maximum."""
    n = len(_WORD.findall(reply))
    if n < min_words:
        return n / min_words
    if n <= max_words:
        return 1.0
    return max(0.0, 1.0 - (n - max_words) / max_words)


def repetition_score(reply: str, previous_agent_replies: Sequence[str]) -> float:
    """0 if the reply repeats an earlier agent reply word for word, else 1 − its share of repeated trigrams."""
    words = [w.lower() for w in _WORD.findall(reply)]
    if any(words == [w.lower() for w in _WORD.findall(p)] for p in previous_agent_replies):
        return 0.0
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    if not trigrams:
        return 1.0
    return len(set(trigrams)) / len(trigrams)


def format_score(reply: str, declared_intent: str | None) -> float:
    """1 for a non-empty reply with a declared intent, 0.5 without the intent, 0 for an empty reply."""
    if not _WORD.search(reply):
        return 0.0
    return 1.0 if declared_intent else 0.5


class LengthReward:
    """:func:`length_score` as a batched component; range [0, 1]."""

    def score(self, contexts: Sequence[TurnContext]) -> list[float]:
        """One score per context."""
        return [length_score(c.reply) for c in contexts]


class RepetitionReward:
    """:func:`repetition_score` against the agent's earlier replies; range [0, 1]."""

    def score(self, contexts: Sequence[TurnContext]) -> list[float]:
        """One score per context."""
        return [repetition_score(c.reply, [t.text for t in c.history if t.role == "agent"]) for c in contexts]


class FormatReward:
    """:func:`format_score` as a batched component; range [0, 1]."""

    def score(self, contexts: Sequence[TurnContext]) -> list[float]:
        """One score per context."""
        return [format_score(c.reply, c.declared_intent) for c in contexts]
