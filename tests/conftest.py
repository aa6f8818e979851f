"""Shared fixtures: the STAR corpus (about 2 s) and a trained debug run (about a minute), made once per session."""

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
