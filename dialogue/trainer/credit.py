"""Process credit: put each reward stage on the last token of the step of the turn it scores.

A generated agent turn is ``intent: ...`` / ``search: ...`` / (results, not the policy's) /
``reply: ...``. With ``credit="process"`` the intent stage's reward lands on the last token of the
intent line, the retrieval stage's on the last token of the search line (or of the reply, when the
turn did not search and the knowledge scored is what supports the reply), and the satisfaction
stage's on the last token of the reply. With ``credit="turn"`` the whole composite lands on the
turn's last token. Rule components (weight 0 by default) go with the reply.

Finding those tokens: :func:`stage_char_ends` finds where each step ends in the turn's text,
:func:`token_char_ends` where each token ends, and :func:`stage_positions` joins the two, snapped to
a policy token (never one of the inserted results).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence

from csrl.dialogue.models.prompts import cut_turn_end

CREDITS = ("process", "turn")
_LINE_END = {
    "intent": re.compile(r"^[ \t]*intent[ \t]*:.*$", re.IGNORECASE | re.MULTILINE),
    "search": re.compile(r"^[ \t]*search[ \t]*:.*$", re.IGNORECASE | re.MULTILINE),
}


def stage_char_ends(text: str) -> dict[str, int]:
    r"""Character offset just past each step of a generated turn; absent steps are left out.

    >>> stage_char_ends("intent: weather\nsearch: weather Monday\nreply: Sunny.")
    {'intent': 15, 'search': 38, 'reply': 52}
    >>> stage_char_ends("reply: hi")
    {'reply': 9}
    """
    ends = {}
    for step, pattern in _LINE_END.items():
        match = pattern.search(text)
        if match:
            ends[step] = match.end()
    reply_end = len(text.rstrip())
    if reply_end:
        ends["reply"] = reply_end
    return ends


def token_at_char(token_char_ends: Sequence[int], char_end: int) -> int:
    """Index of the first token whose text reaches ``char_end`` (tokens' cumulative character ends).

    >>> token_at_char([3, 7, 8, 12], 8)
    2
    >>> token_at_char([3, 7, 8, 12], 99)
    3
    """
    return min(bisect.bisect_left(token_char_ends, char_end), len(token_char_ends) - 1)


def place_rewards(
    num_tokens: int,
    stage_token: Mapping[str, int],
    weighted: Mapping[str, float],
    credit: str = "process",
) -> list[float]:
    """Per-token rewards of one turn from its weighted stage rewards.

    Args:
        num_tokens: tokens the policy generated in the turn.
        stage_token: step name (``intent``, ``search``, ``reply``) -> index of its last token.
        weighted: component name -> weighted reward (what it adds to the turn's total).
        credit: ``"process"`` (each stage at its step) or ``"turn"`` (the total on the last token).

    >>> place_rewards(5, {"intent": 1, "reply": 4}, {"intent": 0.3, "retrieval": 0.4, "satisfaction": 0.1})
    [0.0, 0.3, 0.0, 0.0, 0.5]
    >>> place_rewards(5, {"intent": 1, "search": 2, "reply": 4}, {"intent": 0.3, "retrieval": 0.4}, credit="turn")
    [0.0, 0.0, 0.0, 0.0, 0.7]
    """
    if credit not in CREDITS:
        raise ValueError(f"credit={credit!r}: expected one of {CREDITS}")
    if num_tokens < 1:
        raise ValueError("a turn has at least one generated token to carry its reward")
    rewards = [0.0] * num_tokens
    last = num_tokens - 1
    if credit == "turn":
        rewards[last] = float(sum(weighted.values()))
        return rewards
    step_of = {"intent": "intent", "retrieval": "search" if "search" in stage_token else "reply"}
    for component, value in weighted.items():
        position = stage_token.get(step_of.get(component, "reply"), last)
        rewards[min(max(position, 0), last)] += float(value)
    return rewards


def token_char_ends(tokenizer, token_ids: Sequence[int], skip: int | None = None) -> list[int]:
    """Cumulative character ends of each token of ``token_ids`` in their decoded text (``skip``: an id to drop).

    Decoded prefix by prefix, so multi-byte characters split across byte-level tokens count once; forced
    non-decreasing, as :func:`token_at_char` bisects them.
    """
    ends, kept, last = [], [], 0
    for token in token_ids:
        if token != skip:
            kept.append(token)
        last = max(last, len(tokenizer.decode(kept, skip_special_tokens=False)))
        ends.append(last)
    return ends


def snap_to_action(index: int, action_mask: Sequence[int]) -> int:
    """The policy token at or before ``index`` (else the first after): a reward must land on an action.

    >>> snap_to_action(3, [1, 1, 0, 0, 1])
    1
    >>> snap_to_action(0, [0, 1])
    1
    """
    for i in range(min(index, len(action_mask) - 1), -1, -1):
        if action_mask[i]:
            return i
    return next(i for i, m in enumerate(action_mask) if m)


def stage_positions(tokenizer, turn) -> dict[str, int]:
    """Index in ``turn.response_ids`` of the last token of each step (intent, search, reply), on policy tokens.

    ``turn`` is a :class:`~csrl.dialogue.trainer.generation.GeneratedTurn` (its ``response_ids``,
    ``action_mask`` and ``text``).
    """
    ends = token_char_ends(tokenizer, turn.response_ids, skip=tokenizer.eos_token_id)
    chars = stage_char_ends(cut_turn_end(turn.text))
    return {step: snap_to_action(token_at_char(ends, end), turn.action_mask) for step, end in chars.items()}
