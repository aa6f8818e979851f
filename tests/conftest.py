"""Shared fixtures, made once per session: the STAR corpus (~2 s), the sentence encoder (~5 s), a trained debug run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def star_corpus():
    from csrl.data import load_corpus

    return load_corpus("star")


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory):
    """``(folder, config, summary)`` of a debug-preset run, trained once for every test that reads a run folder."""
    from csrl.dialogue.pipeline.config import TrainConfig
    from csrl.dialogue.pipeline.training import train

    out = tmp_path_factory.mktemp("runs") / "debug"
    config = TrainConfig.from_preset("debug")
    summary = train(config, out, progress=False, log=lambda *_: None)
    return out, config, summary


@pytest.fixture(scope="session")
def encoder():
    """The embedded offline default encoder, loaded once; its embedding cache is shared by the tests."""
    from csrl.rewards.encoder import TextEncoder

    return TextEncoder()
