"""Reward-test fixtures: one shared sentence encoder per session (loading it takes ~5 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def encoder():
    """The embedded offline default encoder, loaded once; its embedding cache is shared by the tests."""
    from csrl.rewards.encoder import TextEncoder

    return TextEncoder()
