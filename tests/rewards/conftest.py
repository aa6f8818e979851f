"""Reward-test fixtures: small dialogue builders (the shared sentence encoder is in tests/conftest.py)."""

from __future__ import annotations

import pytest


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
