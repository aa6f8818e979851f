"""The satisfaction stage's training labels: which logged replies count as good, and the synthetic bad ones.

How training labels are made (:func:`satisfaction_examples`), for each logged agent turn with text:

1. **Explicit rating.** If the customer turn that follows carries a ``rating`` (the customer's
   satisfaction with the agent turn before it): ``>= 4`` -> 1, ``<= 2`` -> 0, ``3`` -> skipped.
2. **The customer's next message** (:func:`reaction_label`): a complaint or frustration
   ("that's wrong", "I already told you", "useless", ...) -> 0; the customer repeating their
   previous message (same words, at least 3 of them) -> 0; thanks or praise ("thanks", "great",
   "perfect", ...) -> 1. Complaints are checked first, so "thanks for nothing" is 0.
3. **A neutral next message** (the customer simply goes on: "yes", a name, a date) -> 1 when the
   conversation's outcome is ``satisfied``, else skipped (an unhappy conversation does not make
   every turn of it bad, and a neutral answer says nothing more).
4. **No next customer message** (the conversation ends after this turn): 1 if the outcome is
   ``satisfied`` (or, when satisfaction is unknown, ``completed``), 0 if it is not (a disconnect
   or an unhappy ending); skipped when the logs have no outcome.
5. **Synthetic negatives** (label 0), one per logged example, in the same context, so that the
   model learns that a bad reply makes a customer unhappy (the logs hold few unhappy turns). The
   kind is drawn with ``SYNTHETIC_WEIGHTS``: the reply of a turn from a conversation with another
   intent (0.1); another reply of the same conversation from *earlier* (0.25; it is in the
   history already) or from *later* (0.4; e.g. the closing line at the start) — the wrong
   moment, 65% of the negatives, taking a sibling from the other side when one side has none;
   a generic reply ("ok", "thanks", "", 0.1); the customer's own last message parroted back
   (0.15). A kind with no candidate falls back to a generic reply. Seeded.

6. **Logs with no signal at all** (no ratings, no reaction that labels a turn, no outcomes: e.g. single-turn
   Q/A exports): every logged agent reply is presumed good (source ``presumed_good``), so the stage learns
   which reply fits the moment against the synthetic negatives of step 5.

7. **Broken replies** (``broken=True``; ``RewardTrainingConfig.broken_reply_negatives``): a rude reply (a logged
   customer complaint sent back as the agent's) and a garbled one (the logged reply with words dropped, shuffled
   or misspelt, :func:`garble`) join the synthetic kinds (``BROKEN_WEIGHTS``), so that a reward-hacking policy's
   broken sentences lose to the fluent reply they imitate.

On STAR's train split (4,789 conversations, 42,673 agent turns; no per-turn ratings; outcomes
mostly satisfied) this gives, with ``seed=0`` (``python -m csrl.rewards.satisfaction_labels`` prints them):

- logged: 41,095 examples, 40,435 positive (next message thanks/praise 7,024; neutral next message
  in a satisfied conversation 28,945; ended satisfied 4,466) and 660 negative (complaint 381,
  repeat 47, disconnect / unhappy ending 232); skipped 1,578 (neutral next message in a
  conversation that was not satisfied);
- synthetic negatives: 41,095 (same conversation earlier 10,949 and later 15,722, other intent
  4,136, generic 4,208, parrot 6,080; "generic" includes the fallbacks when a kind found no
  candidate).

So most positive labels mean "the conversation went on and ended well", and most negatives are
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from csrl.data.schema import Conversation
from csrl.rewards.context import TurnContext, contexts_from_conversation
from csrl.rewards.heads import subsample

PRESUMED_GOOD = "presumed_good"  # the label source of step 6
SYNTHETIC_GENERIC_REPLIES = ("ok", "thanks", "", "Okay.", "Thank you.", "Sure.", "I see.", "Hello.")
SYNTHETIC_KINDS = ("other_intent", "same_conversation_earlier", "same_conversation_later", "generic", "parrot")
SYNTHETIC_WEIGHTS = (0.1, 0.25, 0.4, 0.1, 0.15)  # P(kind) of each synthetic negative; wrong moments are 65%
# with broken=True (step 7): a rude reply (a logged complaint) and a garbled one join, the wrong moments keep 65%
BROKEN_KINDS = ("rude", "garbled")
BROKEN_WEIGHTS = (0.08, 0.25, 0.4, 0.05, 0.07, 0.05, 0.1)  # SYNTHETIC_KINDS + BROKEN_KINDS
GARBLINGS = ("drop", "shuffle", "misspell")

# Reactions to the agent's last reply. Complaints are checked before thanks ("thanks for nothing").
_COMPLAINT = re.compile(
    r"\b(?:that'?s (?:not|wrong)|that is (?:not|wrong)|not what i|wrong|incorrect|not (?:right|correct|helpful)"
    r"|didn'?t (?:ask|say|help)|i (?:already|just) (?:told|said|gave)|i said|you (?:don'?t|didn'?t|aren'?t) "
    r"(?:understand|listen)|useless|terrible|awful|horrible|ridiculous|stupid|frustrat\w*|annoy\w*|angry|upset"
    r"|unacceptable|waste of|makes no sense|doesn'?t (?:help|make sense)|not helping|are you (?:a bot|even)"
    r"|thanks for nothing|speak to (?:a|your) (?:human|manager|supervisor)|what\?{2,})",
    re.I,
)
_THANKS = re.compile(
    r"\b(?:thanks?|thank you|thx|ty|cheers|great|perfect|awesome|excellent|wonderful|fantastic|brilliant"
    r"|appreciate\w*|helpful|amazing|good job|nice|lovely|that'?s all i need\w*|that helps)\b",
    re.I,
)
_WORD = re.compile(r"[a-z0-9']+")


def word_set(text: str) -> set[str]:
    """The lower-cased words of ``text`` (letters, digits, apostrophes), as a set.

    >>> sorted(word_set("That's it, THAT'S it!"))
    ['it', "that's"]
    """
    return set(_WORD.findall(text.lower()))


def is_complaint(message: str) -> bool:
    """Whether a customer message complains or shows frustration (the pattern :func:`reaction_label` labels 0).

    >>> is_complaint("This is useless, I already told you!"), is_complaint("Thanks, that's great")
    (True, False)
    """
    return bool(_COMPLAINT.search(message))


def reaction_label(next_message: str, previous_message: str | None = None) -> tuple[int | None, str]:
    """Label an agent turn from the customer's next message: ``(1 | 0 | None, reason)``.

    >>> reaction_label("Thanks, that's great!")
    (1, 'thanks')
    >>> reaction_label("That's wrong, I already told you my name")
    (0, 'complaint')
    >>> reaction_label("I want to book a table for two", "I want to book a table for two!")
    (0, 'repeat')
    >>> reaction_label("Yes please")
    (None, 'neutral')
    """
    if is_complaint(next_message):
        return 0, "complaint"
    if previous_message is not None:
        now, before = word_set(next_message), word_set(previous_message)
        # Saying the same thing again means the reply did not land; short answers ("yes") repeat innocently.
        if len(before) >= 3 and len(now & before) / len(now | before) >= 0.8:
            return 0, "repeat"
    if _THANKS.search(next_message):
        return 1, "thanks"
    return None, "neutral"


def rating_label(rating: int) -> int | None:
    """A 1–5 rating as a label: ``>= 4`` -> 1, ``<= 2`` -> 0, ``3`` -> ``None`` (skipped).

    >>> [rating_label(r) for r in (1, 2, 3, 4, 5)]
    [0, 0, None, 1, 1]
    """
    if not 1 <= rating <= 5:
        raise ValueError(f"rating={rating} is outside 1..5")
    return 1 if rating >= 4 else 0 if rating <= 2 else None


# ---------------------------------------------------------------------------------------------- examples


class SatisfactionExample(NamedTuple):
    """A (context, reply) pair with its label; ``source`` says how the label was made.

    ``context`` is the logged turn's context (its own ``reply`` is the logged one); ``reply`` is the
    reply being labelled (the logged one, or a synthetic negative).
    """

    context: TurnContext
    reply: str
    label: int
    source: str


def logged_label(conversation: Conversation, agent_index: int) -> tuple[int | None, str]:
    """The label of the agent turn at ``conversation.turns[agent_index]`` from the log's own signals.

    See the module docstring, steps 1–4. Returns ``(None, reason)`` for a skipped turn.
    """
    turns = conversation.turns
    following = [t for t in turns[agent_index + 1 :] if t.role == "customer"]
    before = [t for t in turns[:agent_index] if t.role == "customer"]
    outcome = conversation.outcome
    if following:
        reaction = following[0]
        if reaction.rating is not None:
            label = rating_label(reaction.rating)
            return label, "rating" if label is not None else "rating_3"
        label, reason = reaction_label(reaction.text, before[-1].text if before else None)
        if label is not None:
            return label, reason
        if outcome is not None and outcome.satisfied:
            return 1, "neutral_satisfied"
        return None, "neutral"
    ended_well = None
    if outcome is not None:
        ended_well = outcome.satisfied if outcome.satisfied is not None else outcome.completed
    if ended_well is None:
        return None, "ended_unknown"
    return (1, "ended_satisfied") if ended_well else (0, "disconnect")


def satisfaction_examples(
    conversations: Sequence[Conversation],
    seed: int = 0,
    *,
    max_contexts: int | None = None,
    synthetic: bool = True,
    broken: bool = False,
) -> list[SatisfactionExample]:
    """Labelled (context, reply, label) examples from logs, plus synthetic negatives.

    Args:
        conversations: the logs (e.g. the train split).
        seed: seeds the context sample and the synthetic negatives.
        max_contexts: keep a seeded sample of at most this many labelled agent turns (embedding
            the contexts is the cost); ``None`` keeps all.
        synthetic: add one synthetic negative per logged example (module docstring, step 5).
        broken: draw rude and garbled replies among the synthetic negatives too (step 7).

    Returns:
        Logged examples first, then the synthetic ones.
    """
    rng = np.random.default_rng(seed)
    logged: list[tuple[int, TurnContext, int, str]] = []  # (conversation index, context, label, source)
    per_conversation: list[list[TurnContext]] = []
    for ci, conv in enumerate(conversations):
        contexts = iter(contexts_from_conversation(conv))
        kept = []
        for ti, turn in enumerate(conv.turns):
            if turn.role != "agent":
                continue
            ctx = next(contexts)
            if not ctx.reply.strip():
                continue
            kept.append(ctx)
            label, source = logged_label(conv, ti)
            if label is not None:
                logged.append((ci, ctx, label, source))
        per_conversation.append(kept)
    if not logged:  # step 6: no signal anywhere (single-turn Q/A exports): the logged replies are the good ones
        logged = [(ci, ctx, 1, PRESUMED_GOOD) for ci, kept in enumerate(per_conversation) for ctx in kept]
    if max_contexts is not None:
        logged = [logged[i] for i in subsample(len(logged), max_contexts, seed)]
    examples = [SatisfactionExample(ctx, ctx.reply, label, source) for _, ctx, label, source in logged]
    if not synthetic:
        return examples
    pool = [(ci, ctx) for ci, kept in enumerate(per_conversation) for ctx in kept]
    kinds, weights = (
        (SYNTHETIC_KINDS + BROKEN_KINDS, BROKEN_WEIGHTS) if broken else (SYNTHETIC_KINDS, SYNTHETIC_WEIGHTS)
    )
    said = [t.text for c in conversations for t in c.turns if t.role == "customer"]
    complaints = sorted({text for text in said if is_complaint(text)}) if broken else []
    for ci, ctx, _, _ in logged:
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        reply = None
        if kind == "rude" and complaints:
            reply = complaints[int(rng.integers(len(complaints)))]
        elif kind == "garbled":
            reply = garble(ctx.reply, GARBLINGS[int(rng.integers(len(GARBLINGS)))], rng)
        if reply is None or reply == ctx.reply:  # the fluent kinds, and a reply too short to break
            reply, kind = _synthetic_reply(kind, ci, ctx, conversations, per_conversation, pool, rng)
        examples.append(SatisfactionExample(ctx, reply, 0, kind))
    return examples


def garble(text: str, how: str, rng: np.random.Generator) -> str:
    """``text`` broken as a weak generator breaks it (``how``: ``drop``, ``shuffle`` or ``misspell``).

    ``drop`` leaves out a third of the words, ``shuffle`` reorders them, ``misspell`` breaks half of the words of four
    letters or more (two inner letters swapped, or one left out).

    >>> rng = np.random.default_rng(0)
    >>> garble("Could I get your full name, please?", "drop", rng)
    'Could I get your please?'
    >>> sorted(garble("a b c d", "shuffle", rng).split())
    ['a', 'b', 'c', 'd']
    """
    words = text.split()
    if how == "drop" and len(words) > 1:
        drop = set(rng.choice(len(words), size=max(1, len(words) // 3), replace=False).tolist())
        return " ".join(w for i, w in enumerate(words) if i not in drop)
    if how == "shuffle" and len(set(words)) > 1:
        order = list(range(len(words)))
        while order == sorted(order):
            order = rng.permutation(len(words)).tolist()
        return " ".join(words[i] for i in order)
    broken = []
    for word in words:
        if len(word) >= 4 and rng.random() < 0.5:
            i = int(rng.integers(1, len(word) - 2))
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :] if rng.random() < 0.5 else word[:i] + word[i + 1 :]
        broken.append(word)
    return " ".join(broken)


def _synthetic_reply(kind, ci, ctx, conversations, per_conversation, pool, rng) -> tuple[str, str]:
    """A bad reply of ``kind`` for ``ctx`` (one of ``SYNTHETIC_KINDS``), falling back to a generic reply.

    A wrong-moment kind with no sibling on its side (earlier / later) takes one from the other side.
    """
    intent = ctx.gold_intent or conversations[ci].intent
    if kind == "other_intent":
        for _ in range(20):
            oc, other = pool[int(rng.integers(len(pool)))]
            other_intent = other.gold_intent or conversations[oc].intent
            if other_intent != intent and other.reply != ctx.reply:
                return other.reply, kind
    elif kind.startswith("same_conversation"):
        kept = per_conversation[ci]
        here = next(i for i, c in enumerate(kept) if c is ctx)
        earlier = [c.reply for c in kept[:here] if c.reply != ctx.reply]
        later = [c.reply for c in kept[here + 1 :] if c.reply != ctx.reply]
        sides = [("same_conversation_earlier", earlier), ("same_conversation_later", later)]
        if kind == "same_conversation_later":
            sides.reverse()
        for side, siblings in sides:
            if siblings:
                return siblings[int(rng.integers(len(siblings)))], side
    elif kind == "parrot":
        said = ctx.customer_messages()
        if said and said[-1] != ctx.reply:
            return said[-1], kind
    return SYNTHETIC_GENERIC_REPLIES[int(rng.integers(len(SYNTHETIC_GENERIC_REPLIES)))], "generic"


def ranking_pairs(examples: Sequence[SatisfactionExample]) -> list[tuple[int, int]]:
    """``(logged positive, synthetic negative)`` index pairs that share a context: the same moment, two replies.

    >>> ctx = TurnContext((), "Your table is booked.")
    >>> ranking_pairs([SatisfactionExample(ctx, ctx.reply, 1, "next_thanks"),
    ...                SatisfactionExample(ctx, "ok", 0, "generic")])
    [(0, 1)]
    """
    positive = {id(e.context): i for i, e in enumerate(examples) if e.label == 1 and e.source not in SYNTHETIC_KINDS}
    return [
        (positive[id(e.context)], j)
        for j, e in enumerate(examples)
        if e.source in SYNTHETIC_KINDS and id(e.context) in positive
    ]


def label_counts(examples: Sequence[SatisfactionExample]) -> dict:
    """``{"total", "positive", "negative", "by_source": {source: n}}`` for documentation and logs."""
    labels = Counter(e.label for e in examples)
    return {
        "total": len(examples),
        "positive": labels.get(1, 0),
        "negative": labels.get(0, 0),
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
    }


__all__ = [
    "PRESUMED_GOOD",
    "SYNTHETIC_GENERIC_REPLIES",
    "SYNTHETIC_KINDS",
    "SYNTHETIC_WEIGHTS",
    "SatisfactionExample",
    "label_counts",
    "logged_label",
    "ranking_pairs",
    "rating_label",
    "reaction_label",
    "satisfaction_examples",
    "word_set",
]


if __name__ == "__main__":  # pragma: no cover - a manual measurement: python -m csrl.rewards.satisfaction_labels
    import json

    from csrl.data import load_corpus

    corpus = load_corpus("star")
    print(json.dumps(label_counts(satisfaction_examples(corpus.split("train"), 0)), indent=2))
