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
