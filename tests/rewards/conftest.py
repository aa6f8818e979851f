"""Reward-test fixtures: one shared sentence encoder per session (loading it takes ~5 s), small dialogue builders."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def encoder():
    """The embedded offline default encoder, loaded once; its embedding cache is shared by the tests."""
    from csrl.rewards.encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def fraud_conversation():
    """Build a ``bank_fraud_report`` conversation from ``(role, text)`` or ``("customer", text, rating)`` rows.

    Tables stay plain tuples (fixtures cannot appear in ``parametrize``); agent turns declare the
    conversation's intent, and ``satisfied`` / ``completed`` set its outcome.
    """
    from csrl.data.schema import Conversation

    def build(turns, satisfied=True, completed=True):
        rows = []
        for role, text, *rating in turns:
            row = {"role": role, "text": text}
            if role == "agent":
                row["intent"] = "bank_fraud_report"
            if rating:
                row["rating"] = rating[0]
            rows.append(row)
        return Conversation.from_dict(
            {
                "id": "c",
                "intent": "bank_fraud_report",
                "turns": rows,
                "outcome": {"satisfied": satisfied, "completed": completed},
            }
        )

    return build
