"""BM25 over the knowledge base: one shared tokenizer, batched search, and scores for any (query, text) pair.

The backend is bm25s (a sparse precomputed score matrix; ~100x faster than rank-bm25 with the same
rankings, see ``bench/bm25_compare.py``). Scoring follows Lucene's BM25, which bm25s implements::

    idf(t)        = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(q, d)   = sum over distinct t in q of  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

Lucene's idf is positive for every term, so a corpus of one or two documents still ranks sensibly
(classic Okapi idf, as in rank-bm25, is 0 for a term in one of two documents and negative above
half the corpus). Query terms count once each (a customer repeating a word does not double its weight)
and terms outside the corpus vocabulary score 0.

>>> index = BM25Index(["the cat sat", "a dog barked at the cat", "stock prices fell"])
>>> indices, scores = index.search(["dog"], k=2)
>>> indices[0].tolist(), round(float(scores[0, 0]), 4)
([1, 0], 0.3203)
>>> index.normalized_pairs(["cat"], ["my cat sat on a cat"]).round(2).tolist()
[1.0]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; "_" and punctuation separate words


def tokenize(text: str) -> list[str]:
    """The one tokenizer of documents, queries and replies: lowercase word tokens.

    camelCase and snake_case names are split first, because logged API queries spell fields as
    ``StartTimeHour=7 pm`` or ``apartment_schedule`` while documents say "Start Time Hour: 7 pm".
    No stemming and no stopword list: BM25's idf already discounts common words.

    >>> tokenize("StartTimeHour=7 pm, apartment_schedule: Café's")
    ['start', 'time', 'hour', '7', 'pm', 'apartment', 'schedule', 'café', 's']
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize() takes a str, got {type(text).__name__}")
    return _WORD.findall(_CAMEL_BOUNDARY.sub(" ", text).lower())


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """Return ``texts`` as a list, refusing a bare string (which would be read as characters) and non-strings."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, got a single str; wrap it in a list: [text]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(text).__name__}")
    return texts


def check_k(k: int) -> int:
    """Validate a top-k size (clipping to the corpus size is the caller's job)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k={k}: ask for at least 1 result")
    return int(k)


class BM25Index:
    """A BM25 index over document texts, tokenized with :func:`tokenize`.

    Args:
        texts: the documents (at least one, and at least one word among them). Empty documents are
            allowed and never match.
        k1: term-frequency saturation.
        b: document-length normalisation.

    Attributes:
        n_docs: number of documents.
        avgdl: mean document length in tokens.
        vocabulary: token -> column id.
        idf: ``(len(vocabulary),)`` float32 idf of each vocabulary token.

    """

    def __init__(self, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75):
        import bm25s

        texts = check_texts(texts, "BM25Index texts")
        if not texts:
            raise ValueError("cannot build a BM25 index over an empty corpus: pass at least one document text")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"k1={k1}, b={b}: BM25 needs k1 >= 0 and 0 <= b <= 1 (defaults 1.5, 0.75)")
        corpus_tokens = [tokenize(t) for t in texts]
        if not any(corpus_tokens):
            raise ValueError("no document contains a word token: BM25 has nothing to index (check the texts)")
        self.k1, self.b = float(k1), float(b)
        self.n_docs = len(texts)
        self.doc_lengths = np.array([len(t) for t in corpus_tokens], dtype=np.float32)
        self.avgdl = float(self.doc_lengths.mean())
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._bm25.index(corpus_tokens, create_empty_token=False, show_progress=False)
        self.vocabulary: dict[str, int] = self._bm25.vocab_dict
        # bm25s stores a token-major (CSC) score matrix: a token's postings count is its document frequency.
        df = np.diff(self._bm25.scores["indptr"]).astype(np.float64)
        self.idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)

    def __len__(self) -> int:
        return self.n_docs

    def query_ids(self, query: str) -> list[int]:
        """Distinct vocabulary ids of ``query``'s tokens, in first-seen order; unknown tokens dropped."""
        return [self.vocabulary[t] for t in dict.fromkeys(tokenize(query)) if t in self.vocabulary]

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for every query: float32 ``(len(queries), n_docs)``."""
        queries = check_texts(queries, "queries")
        out = np.zeros((len(queries), self.n_docs), dtype=np.float32)
        for row, query in enumerate(queries):
            ids = self.query_ids(query)
            if ids:
                out[row] = self._bm25.get_scores_from_ids(ids)
        return out

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` documents per query, best first.

        ``k`` larger than the corpus is clipped to ``n_docs``. Ties are ordered by document index (which of
        several documents tied at the k-th place is kept is deterministic but unspecified).

        Returns:
            ``(indices, scores)``: int64 and float32 arrays of shape ``(len(queries), min(k, n_docs))``.

        """
        k = min(check_k(k), self.n_docs)
        all_scores = self.scores(queries)
        if k < self.n_docs:  # partial selection first: O(n) instead of sorting the whole corpus
            candidates = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        else:
            candidates = np.broadcast_to(np.arange(self.n_docs), all_scores.shape)
        picked = np.take_along_axis(all_scores, candidates, axis=1)
        # order the k picked by score, then by index: deterministic ties
        order = np.lexsort((candidates, -picked), axis=1)
        indices = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        return indices, np.take_along_axis(picked, order, axis=1)

    def best_scores(self, queries: Sequence[str]) -> np.ndarray:
        """The best BM25 score over the corpus for each query: float32 ``(len(queries),)``."""
        return self.scores(queries).max(axis=1, initial=0.0)

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """BM25 score of each ``(queries[i], texts[i])`` pair, for any text (in the corpus or not).

        The corpus supplies idf and avgdl, so a text that is also a corpus document gets exactly its
        :meth:`scores` value; a generated reply is scored as if it were one more document.

        Returns:
            float32 array ``(len(queries),)``.

        """
        queries, texts = check_texts(queries, "queries"), check_texts(texts, "texts")
        if len(queries) != len(texts):
            raise ValueError(f"score_pairs needs one text per query, got {len(queries)} queries and {len(texts)} texts")
        out = np.zeros(len(queries), dtype=np.float32)
        for i, (query, text) in enumerate(zip(queries, texts, strict=True)):
            ids = self.query_ids(query)
            if not ids:
                continue
            doc = tokenize(text)
            counts = Counter(doc)
            norm = self.k1 * (1 - self.b + self.b * len(doc) / self.avgdl)
            total = 0.0
            for token in dict.fromkeys(tokenize(query)):
                tf = counts.get(token, 0)
                if tf and token in self.vocabulary:
                    total += float(self.idf[self.vocabulary[token]]) * tf / (tf + norm)
            out[i] = total
        return out

    def normalized_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Pair scores divided by the best corpus score of each query, in [0, 1].

        A text outside the corpus can beat every document; the ratio is then capped at 1. A query
        with no known word gives 0.
        """
        queries = check_texts(queries, "queries")
        return normalize_by_best(self.score_pairs(queries, texts), self.best_scores(queries))


def normalize_by_best(scores: np.ndarray, best: np.ndarray) -> np.ndarray:
    """``scores / best`` clipped to [0, 1], 0 where ``best`` is 0 (broadcasts a ``(Q,)`` best over ``(Q, N)``).

    >>> normalize_by_best(np.array([[2.0, 1.0], [0.0, 0.0]]), np.array([2.0, 0.0])).tolist()
    [[1.0, 0.5], [0.0, 0.0]]
    """
    scores = np.asarray(scores, dtype=np.float32)
    best = np.asarray(best, dtype=np.float32)
    if scores.ndim == 2:
        best = best[:, None]
    safe = np.where(best > 0, best, 1.0)
    return np.clip(np.where(best > 0, scores / safe, 0.0), 0.0, 1.0).astype(np.float32)


def lucene_idf(df: int, n_docs: int) -> float:
    """Lucene's BM25 idf: ``ln(1 + (N - df + 0.5) / (df + 0.5))``, positive for every ``df <= N``.

    >>> round(lucene_idf(1, 2), 4), round(lucene_idf(2, 2), 4)
    (0.6931, 0.1823)
    """
    return math.log1p((n_docs - df + 0.5) / (df + 0.5))
