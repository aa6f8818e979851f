"""Fixtures shared by the dialogue tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the tiny model gains nothing from two, and loses a lot when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
