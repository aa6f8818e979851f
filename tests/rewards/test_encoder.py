"""The shared encoder: cache, precision choice and bfloat16 fidelity."""

import numpy as np
import pytest

from csrl.rewards.config import RewardConfig
from csrl.rewards.encoder import cpu_has_native_bf16, resolve_precision

TEXTS = ["I need a taxi to the airport at 6 pm", "Your booking is confirmed.", "héllo — ça va?", ""]


def test_bfloat16_embeddings_stay_within_cosine_0_999_of_float32(encoder):
    saved = encoder.precision
    try:
        encoder.precision = "float32"
        encoder.clear_cache()
        full = encoder.encode(TEXTS)
        encoder.precision = "bfloat16"
        encoder.clear_cache()
        half = encoder.encode(TEXTS)
    finally:
        encoder.precision = saved
        encoder.clear_cache()
    assert half.dtype == np.float32 and half.shape == full.shape == (4, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-3)
    cosine = (full * half).sum(axis=1)
    assert cosine.min() > 0.999, cosine
    assert not np.array_equal(full, half), "bfloat16 autocast did not change the computation"


def test_cache_returns_the_same_vector_without_recomputing(encoder):
    first = encoder.encode(["cache me"])
    encoder.model, model = None, encoder.model  # any recomputation would now fail
    try:
        np.testing.assert_array_equal(encoder.encode(["cache me", "cache me"]), np.vstack([first, first]))
    finally:
        encoder.model = model


def test_auto_precision_follows_the_cpu_flags(tmp_path, monkeypatch):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_has_native_bf16(str(with_bf16)) and not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    monkeypatch.setattr("csrl.rewards.encoder.cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr("csrl.rewards.encoder.cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"precision='fp8': expected one of auto, float32, bfloat16"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match=r"encoder_precision='half'"):
        RewardConfig(encoder_precision="half")


def test_a_need_is_its_joined_text_or_the_mean_of_its_messages(encoder):
    import pickle

    from csrl.rewards.context import Need

    need = Need(["book a table for two", "hi there"])
    assert need == "book a table for two hi there" and pickle.loads(pickle.dumps(need)).messages == need.messages
    as_text = encoder.encode([need])
    np.testing.assert_array_equal(as_text, encoder.encode(["book a table for two hi there"]))
    encoder.need_embedding = "messages"
    try:
        mean_of, plain, empty = encoder.encode([need, "hi there", Need([])])
        messages = encoder.encode(["book a table for two", "hi there"])
    finally:
        encoder.need_embedding = "text"
    expected = messages.mean(axis=0) / np.linalg.norm(messages.mean(axis=0))
    np.testing.assert_allclose(mean_of, expected, atol=1e-6)
    assert float(mean_of @ as_text[0]) < 0.99, "the two ways embed the need differently"
    np.testing.assert_array_equal(plain, messages[1])  # a plain text is embedded as itself in either way
    np.testing.assert_array_equal(empty, encoder.encode([""])[0])  # no message yet: the empty text's embedding


def test_messages_mode_reuses_earlier_messages_at_later_turns(encoder):
    from csrl.rewards.context import Need

    encoder.need_embedding = "messages"
    try:
        encoder.encode([Need(["my card was stolen"])])
        encoder.model, model = None, encoder.model  # only the new message may be embedded now
        try:
            with pytest.raises(AttributeError):
                encoder.encode([Need(["Sam Lee", "my card was stolen"])])
        finally:
            encoder.model = model
        encoder.encode(["Sam Lee"])
        encoder.model, model = None, encoder.model
        try:
            assert encoder.encode([Need(["Sam Lee", "my card was stolen"])]).shape == (1, encoder.dim)
        finally:
            encoder.model = model
    finally:
        encoder.need_embedding = "text"


def test_unknown_need_embedding_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"need_embedding='words': expected one of text, messages"):
        RewardConfig(need_embedding="words")


def test_a_small_call_runs_on_one_thread_and_the_setting_comes_back(encoder, monkeypatch):
    import torch

    seen = []
    real = encoder.model.encode

    def spy(texts, **kwargs):
        seen.append((len(texts), torch.get_num_threads()))
        return real(texts, **kwargs)

    monkeypatch.setattr(encoder.model, "encode", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        encoder.encode([f"a small call {i}" for i in range(encoder.one_thread_up_to)])
        encoder.encode([f"a large call {i}" for i in range(encoder.one_thread_up_to + 1)])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [(encoder.one_thread_up_to, 1), (encoder.one_thread_up_to + 1, 2)]
