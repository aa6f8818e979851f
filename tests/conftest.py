"""Shared fixtures: the STAR corpus is loaded once per session (about 2 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def star_corpus():
    from csrl.data import load_corpus

    return load_corpus("star")
