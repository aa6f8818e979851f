"""A FAISS inner-product index over unit-norm sentence embeddings (inner product = cosine).

``kind="flat"`` is exact and, for a KB of a few thousand documents, about a millisecond a query;
``kind="hnsw"`` (M=32, efSearch=64) and ``kind="ivf"`` (4·√n lists, 16 probed) are approximate, for large KBs.
``kind="auto"`` (the default) takes flat up to :data:`FLAT_MAX_DOCS` documents and HNSW above
(``bench/faiss_index.py`` measures recall@10 against flat and the query time of each on real embeddings).

>>> vectors = np.eye(3, dtype=np.float32)
>>> index = DenseIndex(vectors)
>>> indices, scores = index.search(np.array([[0.0, 0.6, 0.8]], dtype=np.float32), k=2)
>>> indices.tolist(), [[round(float(s), 2) for s in row] for row in scores]
([[2, 1]], [[0.8, 0.6]])
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from csrl.rewards.search.bm25 import check_k

KINDS = ("auto", "flat", "hnsw", "ivf")
FLAT_MAX_DOCS = 20_000  # above it "auto" builds HNSW
HNSW_M = 32
HNSW_EF_SEARCH = 64
HNSW_EF_CONSTRUCTION = 80
IVF_PROBES = 16
_INDEX_FILE = "dense.faiss"
_META_FILE = "dense.json"


def _faiss():
    import faiss

    # faiss-cpu 1.15 only switches to BLAS above 128000 query x document products; batched flat
    # search is 7-15x faster with BLAS from 20 queries on.
    faiss.cvar.distance_compute_blas_threshold = 20
    return faiss


def check_vectors(vectors, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array, or a clear error."""
    if isinstance(vectors, (str, bytes)):
        raise TypeError(f"{what} must be a 2-D float array of embeddings, got a {type(vectors).__name__}")
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, dim), got shape {array.shape}; use vector[None, :] for one")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have dimension {array.shape[1]}, the index holds dimension {dim}: same encoder?")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def choose_kind(kind: str, n_docs: int) -> str:
    """The index ``kind`` resolves to for ``n_docs`` documents: ``"auto"`` is flat up to :data:`FLAT_MAX_DOCS`.

    >>> choose_kind("auto", 5_000), choose_kind("auto", 100_000), choose_kind("ivf", 10)
    ('flat', 'hnsw', 'ivf')
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    if kind != "auto":
        return kind
    return "flat" if n_docs <= FLAT_MAX_DOCS else "hnsw"


def ivf_lists(n_docs: int) -> int:
    """Lists of an IVF index over ``n_docs``: 4·√n (FAISS's guideline is 4·√n to 16·√n), at most n / 39.

    FAISS's k-means wants at least 39 training points a list.

    >>> ivf_lists(100_000), ivf_lists(100)
    (1264, 2)
    """
    return max(1, min(int(4 * np.sqrt(n_docs)), n_docs // 39))


class DenseIndex:
    """Inner-product search over fixed document embeddings.

    Args:
        vectors: ``(n_docs, dim)`` document embeddings, unit-norm for cosine scores; at least one.
        kind: ``"auto"`` (flat up to :data:`FLAT_MAX_DOCS` documents, HNSW above), ``"flat"`` (exact), or
            ``"hnsw"`` / ``"ivf"`` (approximate, for large KBs). ``self.kind`` is the kind built.

    """

    def __init__(self, vectors: np.ndarray, kind: str = "auto"):
        vectors = check_vectors(vectors, what="document vectors")
        if len(vectors) == 0:
            raise ValueError("cannot build a dense index over an empty corpus: pass at least one document vector")
        self.kind = choose_kind(kind, len(vectors))
        faiss = _faiss()
        self.dim = int(vectors.shape[1])
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            quantizer = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIVFFlat(quantizer, self.dim, ivf_lists(len(vectors)), faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
            self.index.nprobe = IVF_PROBES
        self.index.add(vectors)
        if self.kind == "ivf":
            self.index.make_direct_map()  # so a saved index gives its vectors back (reconstruct_n)
        self.vectors = vectors  # kept for exact pair cosines (documents x queries)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` documents per query vector, best first; ``k`` larger than the index is clipped.

        Returns:
            ``(indices, scores)``: int64 and float32 arrays ``(n_queries, min(k, n_docs))``.

        """
        k = min(check_k(k), len(self))
        queries = check_vectors(queries, self.dim, "query vectors")
        scores, indices = self.index.search(queries, k)
        return indices.astype(np.int64), scores

    def cosines(self, queries: np.ndarray) -> np.ndarray:
        """Exact inner product of every query with every document: float32 ``(n_queries, n_docs)``."""
        queries = check_vectors(queries, self.dim, "query vectors")
        return queries @ self.vectors.T

    def save(self, folder: str | Path) -> None:
        """Write the index (``dense.faiss``) and its settings (``dense.json``) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(folder / _INDEX_FILE))
        meta = {"kind": self.kind, "dim": self.dim, "n_docs": len(self)}
        (folder / _META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> DenseIndex:
        """Read an index written by :meth:`save`; the document vectors come back from the index itself."""
        folder = Path(folder)
        if not (folder / _INDEX_FILE).exists():
            raise FileNotFoundError(f"no dense index in {folder}: expected {_INDEX_FILE} written by DenseIndex.save")
        faiss = _faiss()
        meta = json.loads((folder / _META_FILE).read_text())
        self = cls.__new__(cls)
        self.kind, self.dim = meta["kind"], int(meta["dim"])
        self.index = faiss.read_index(str(folder / _INDEX_FILE))
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        elif self.kind == "ivf":
            self.index.nprobe = IVF_PROBES
            self.index.make_direct_map()
        if len(self) != meta["n_docs"]:
            raise ValueError(f"{folder}: {_INDEX_FILE} holds {len(self)} vectors, {_META_FILE} says {meta['n_docs']}")
        self.vectors = self.index.reconstruct_n(0, len(self)).astype(np.float32)
        return self
