"""Does the composite reward prefer the real agent reply to bad ones? Pairwise checks on held-out turns.

For each sampled held-out agent turn, the real logged reply (with its logged knowledge and intent)
is scored against five negatives in the same context:

- ``other_intent``: the reply (with its knowledge and intent) of a turn from a conversation with another intent;
- ``same_conversation``: another reply of the same conversation (a plausible reply at the wrong moment);
- ``generic``: an empty-calorie reply ("ok", "thanks", ...) declaring the right intent;
- ``parrot``: the customer's last message sent back, declaring the right intent;
- ``wrong_intent``: the real reply and knowledge with a wrong declared intent;
- ``rude``: a logged customer complaint ("this is useless, I already told you") sent as the reply;
- ``garbled``: the real reply with words dropped, shuffled or misspelt, as a broken policy writes
  (:func:`~csrl.rewards.satisfaction_labels.garble`).

``rude`` and ``garbled`` keep the real turn's intent, search and knowledge: a policy can search well and still
write a bad reply, and the reward must not pay for the search alone. The pairwise accuracy is P(real > negative),
ties counting one half.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from csrl.data.schema import Conversation
from csrl.rewards.composite import CompositeReward
from csrl.rewards.context import TurnContext, contexts_from_conversation
from csrl.rewards.satisfaction_labels import GARBLINGS, garble, is_complaint

NEGATIVES = ("other_intent", "same_conversation", "generic", "parrot", "wrong_intent", "rude", "garbled")
INTEGRITY_GENERIC_REPLIES = ("ok", "thanks", "Okay.", "Thank you.", "Sure.", "")


def build_integrity_pairs(
    conversations: Sequence[Conversation], *, max_turns: int = 500, seed: int = 0
) -> dict[str, list[tuple[TurnContext, TurnContext]]]:
    """Sample up to ``max_turns`` real agent turns and pair each with every negative kind that applies."""
    rng = np.random.default_rng(seed)
    per_conversation = [contexts_from_conversation(c) for c in conversations]
    turns = [(ci, ti) for ci, ctxs in enumerate(per_conversation) for ti, ctx in enumerate(ctxs) if ctx.reply.strip()]
    if not turns:
        raise ValueError("no agent turns to check: pass held-out conversations with agent replies")
    chosen = rng.choice(len(turns), size=min(max_turns, len(turns)), replace=False)
    intents = sorted({ctx.gold_intent for ctxs in per_conversation for ctx in ctxs if ctx.gold_intent})
    said = [t.text for c in conversations for t in c.turns if t.role == "customer"]
    complaints = sorted({text for text in said if is_complaint(text)})
    later = np.random.default_rng([seed, 1])  # the kinds added later draw apart: the earlier kinds' pairs stay the same
    pairs: dict[str, list[tuple[TurnContext, TurnContext]]] = {name: [] for name in NEGATIVES}
    for n, index in enumerate(chosen):
        ci, ti = turns[int(index)]
        real = per_conversation[ci][ti]

        def swap_reply(other: TurnContext, real=real) -> TurnContext:
            return dataclasses.replace(
                real,
                reply=other.reply,
                declared_intent=other.declared_intent,
                knowledge=other.knowledge,
                search_query=other.search_query,
            )

        for _ in range(20):  # a turn from a conversation with another intent
            oc, ot = turns[int(rng.integers(len(turns)))]
            other = per_conversation[oc][ot]
            if other.gold_intent != real.gold_intent:
                pairs["other_intent"].append((real, swap_reply(other)))
                break
        siblings = [c for c in per_conversation[ci] if c.reply.strip() and c.reply != real.reply]
        if siblings:
            pairs["same_conversation"].append((real, swap_reply(siblings[int(rng.integers(len(siblings)))])))
        generic = INTEGRITY_GENERIC_REPLIES[n % len(INTEGRITY_GENERIC_REPLIES)]
        pairs["generic"].append((real, dataclasses.replace(real, reply=generic, knowledge=None, search_query=None)))
        said = real.customer_messages()
        if said:
            pairs["parrot"].append((real, dataclasses.replace(real, reply=said[-1], knowledge=None, search_query=None)))
        wrong = [i for i in intents if i != real.declared_intent]
        if wrong and real.declared_intent:
            pairs["wrong_intent"].append(
                (real, dataclasses.replace(real, declared_intent=wrong[int(rng.integers(len(wrong)))]))
            )
        if complaints:
            complaint = complaints[int(later.integers(len(complaints)))]
            pairs["rude"].append((real, dataclasses.replace(real, reply=complaint)))
        garbled = garble(real.reply, GARBLINGS[n % len(GARBLINGS)], later)
        if garbled != real.reply:
            pairs["garbled"].append((real, dataclasses.replace(real, reply=garbled)))
    return pairs


def integrity_check(
    reward: CompositeReward,
    conversations: Sequence[Conversation],
    *,
    max_turns: int = 500,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Pairwise accuracy of ``reward`` for every negative kind: ``{kind: {"accuracy", "n"}}``."""
    pairs = build_integrity_pairs(conversations, max_turns=max_turns, seed=seed)
    flat = [ctx for kind in NEGATIVES for pair in pairs[kind] for ctx in pair]
    totals = []
    for start in range(0, len(flat), batch_size):
        totals.extend(reward(flat[start : start + batch_size]))
    results, position = {}, 0
    for kind in NEGATIVES:
        n = len(pairs[kind])
        real = np.array(totals[position : position + 2 * n : 2])
        negative = np.array(totals[position + 1 : position + 2 * n : 2])
        position += 2 * n
        accuracy = float(np.mean((real > negative) + 0.5 * (real == negative))) if n else float("nan")
        results[kind] = {"accuracy": round(accuracy, 4), "n": n}
    return results
