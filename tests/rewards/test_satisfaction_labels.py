"""Satisfaction labels: reactions, ratings, logged outcomes, synthetic negatives and ranking pairs."""

from __future__ import annotations

import numpy as np
import pytest

from csrl.data.schema import Conversation, Turn
from csrl.rewards.satisfaction_labels import (
    BROKEN_KINDS,
    BROKEN_WEIGHTS,
    SYNTHETIC_GENERIC_REPLIES,
    SYNTHETIC_KINDS,
    SYNTHETIC_WEIGHTS,
    is_complaint,
    label_counts,
    logged_label,
    ranking_pairs,
    rating_label,
    reaction_label,
    satisfaction_examples,
)

STOLEN = ("customer", "My card was stolen")


@pytest.mark.parametrize(
    ("message", "previous", "expected"),
    [
        ("Thanks!", None, (1, "thanks")),
        ("Perfect, that's all I needed", None, (1, "thanks")),
        ("That's wrong, my name is Sam", None, (0, "complaint")),
        ("This is useless", None, (0, "complaint")),
        ("thanks for nothing", None, (0, "complaint")),  # complaints win over thanks
        ("I need a table for two at 7pm", "I need a table for two at 7pm.", (0, "repeat")),
        ("yes", "yes", (None, "neutral")),  # short answers repeat innocently
        ("Sam Lee", None, (None, "neutral")),
    ],
)
def test_reaction_label_table(message, previous, expected):
    assert reaction_label(message, previous) == expected


@pytest.mark.parametrize(("rating", "expected"), [(1, 0), (2, 0), (3, None), (4, 1), (5, 1)])
def test_rating_label_table(rating, expected):
    assert rating_label(rating) == expected


@pytest.mark.parametrize("rating", [0, 6])
def test_rating_label_refuses_out_of_range(rating):
    with pytest.raises(ValueError, match=f"rating={rating} is outside 1..5"):
        rating_label(rating)


@pytest.mark.parametrize(
    ("turns", "satisfied", "expected"),
    [
        ([STOLEN, ("agent", "Name?"), ("customer", "Sam", 5)], True, (1, "rating")),
        ([STOLEN, ("agent", "Name?"), ("customer", "Thanks!", 1)], True, (0, "rating")),
        ([STOLEN, ("agent", "Name?"), ("customer", "Sam", 3)], True, (None, "rating_3")),
        ([STOLEN, ("agent", "Done."), ("customer", "Great, thanks")], False, (1, "thanks")),
        ([STOLEN, ("agent", "Weather is sunny"), ("customer", "That's not what I asked")], True, (0, "complaint")),
        (
            [("customer", "Someone used my card today"), ("agent", "Hi"), ("customer", "Someone used my card today")],
            True,
            (0, "repeat"),
        ),
        ([STOLEN, ("agent", "Name?"), ("customer", "Sam")], True, (1, "neutral_satisfied")),
        ([STOLEN, ("agent", "Name?"), ("customer", "Sam")], False, (None, "neutral")),
        ([STOLEN, ("agent", "Reported.")], True, (1, "ended_satisfied")),
        ([STOLEN, ("agent", "Please hold.")], False, (0, "disconnect")),
    ],
)
def test_logged_label_table(turns, satisfied, expected, fraud_conversation):
    assert logged_label(fraud_conversation(turns, satisfied=satisfied), 1) == expected


def test_synthetic_weights_are_a_distribution_over_the_kinds():
    assert len(SYNTHETIC_WEIGHTS) == len(SYNTHETIC_KINDS)
    assert sum(SYNTHETIC_WEIGHTS) == pytest.approx(1.0)
    assert len(BROKEN_WEIGHTS) == len(SYNTHETIC_KINDS + BROKEN_KINDS) and sum(BROKEN_WEIGHTS) == pytest.approx(1.0)
    assert sum(BROKEN_WEIGHTS[1:3]) == pytest.approx(sum(SYNTHETIC_WEIGHTS[1:3]))  # the wrong moments keep their 65%


def test_broken_negatives_are_logged_complaints_and_garbled_logged_replies(star_corpus):
    conversations = star_corpus.split("test")[:60]
    plain = satisfaction_examples(conversations, seed=1)
    examples = satisfaction_examples(conversations, seed=1, broken=True)
    assert [e for e in examples if e.label == 1] == [e for e in plain if e.label == 1]  # the logged labels stay
    rude = [e for e in examples if e.source == "rude"]
    garbled = [e for e in examples if e.source == "garbled"]
    assert rude and garbled and all(e.label == 0 for e in rude + garbled)
    complaints = {t.text for c in conversations for t in c.turns if t.role == "customer" and is_complaint(t.text)}
    assert all(e.reply in complaints for e in rude)
    for e in garbled:  # the reply of the same moment, broken: mostly the same words
        assert e.reply != e.context.reply and set(e.reply.split()) & set(e.context.reply.split())
    assert not {"rude", "garbled"} & {e.source for e in plain}


def test_examples_pair_each_logged_turn_with_a_synthetic_negative_in_the_same_context(fraud_conversation):
    conv = fraud_conversation(
        [STOLEN, ("agent", "Could I get your name?"), ("customer", "Sam Lee"), ("agent", "Reported.")]
    )
    examples = satisfaction_examples([conv], seed=0)
    logged, synthetic = examples[:2], examples[2:]
    assert [(e.reply, e.label, e.source) for e in logged] == [
        ("Could I get your name?", 1, "neutral_satisfied"),
        ("Reported.", 1, "ended_satisfied"),
    ]
    assert len(synthetic) == 2
    assert all(e.label == 0 and e.source in SYNTHETIC_KINDS for e in synthetic)
    assert [e.context for e in synthetic] == [e.context for e in logged]
    assert all(s.reply != real.reply for s, real in zip(synthetic, logged, strict=True))
    assert satisfaction_examples([conv], seed=0) == examples  # seeded
    assert ranking_pairs(examples) == [(0, 2), (1, 3)]  # each logged reply above its negative, same context
    assert ranking_pairs([examples[3], examples[0]]) == [], "a subsample that split the pair has none"
    counts = label_counts(examples)
    assert (counts["total"], counts["positive"], counts["negative"]) == (4, 2, 2)
    assert sum(counts["by_source"].values()) == 4 and counts["by_source"]["ended_satisfied"] == 1
    assert satisfaction_examples([conv], seed=0, synthetic=False) == logged


def test_every_synthetic_kind_appears_and_parrot_repeats_the_customer(star_corpus):
    examples = satisfaction_examples(star_corpus.split("test")[:40], seed=1)
    kinds = {e.source for e in examples if e.label == 0}
    assert set(SYNTHETIC_KINDS) <= kinds
    parrots = [e for e in examples if e.source == "parrot"]
    assert parrots and all(e.context.last_customer_message() == e.reply for e in parrots)
    assert all(e.reply in SYNTHETIC_GENERIC_REPLIES for e in examples if e.source == "generic")


def test_wrong_moment_negatives_come_from_the_right_side_of_the_conversation(star_corpus):
    examples = satisfaction_examples(star_corpus.split("test")[:40], seed=1)
    earlier = [e for e in examples if e.source == "same_conversation_earlier"]
    later = [e for e in examples if e.source == "same_conversation_later"]
    assert earlier and later
    assert all(e.reply in e.context.previous_agent_replies() for e in earlier)  # already said: in the history
    # a later reply is mostly new here (STAR agents sometimes say the same line twice)
    assert np.mean([e.reply in e.context.previous_agent_replies() for e in later]) < 0.2
    assert all(e.reply != e.context.reply for e in earlier + later)
    wrong_moment = len(earlier) + len(later)
    assert wrong_moment / sum(e.label == 0 for e in examples) > 0.4  # about half of the synthetic negatives


def test_logs_without_any_signal_presume_the_logged_replies_good():
    from csrl.rewards.satisfaction_labels import PRESUMED_GOOD

    qa = [
        Conversation(f"q{i}", (Turn("customer", question), Turn("agent", answer)))
        for i, (question, answer) in enumerate(
            [("How do I reset my password?", "Open Settings, then Security, and choose Reset password."),
             ("Where is my order?", "Your order ships within two days; the tracking link is in your email.")]
        )
    ]  # fmt: skip
    examples = satisfaction_examples(qa, seed=0)
    logged = [e for e in examples if e.source == PRESUMED_GOOD]
    assert [e.reply for e in logged] == [c.turns[1].text for c in qa] and all(e.label == 1 for e in logged)
    assert len(examples) == 4 and all(e.label == 0 for e in examples[2:])  # one synthetic negative each
    # one real signal anywhere and nothing is presumed
    rated = qa + [Conversation("r", (Turn("customer", "Hi"), Turn("agent", "Hello"), Turn("customer", "thanks!")))]
    assert PRESUMED_GOOD not in {e.source for e in satisfaction_examples(rated, seed=0)}
