"""Hybrid knowledge-base retrieval (BM25 + dense) with a calibrated relevance, and its recall on the logs.

A document's relevance to a query is a logistic regression over two features::

    bm25_ratio = BM25(query, doc) / best BM25(query, any KB doc)      in [0, 1]
    cosine     = <encoder(query), encoder(doc)>                         in [-1, 1]
    relevance  = sigmoid(w_bm25 * bm25_ratio + w_cos * cosine + bias)   in [0, 1]

fitted by :meth:`HybridRetriever.fit_calibration` on the training split's logged tool turns (the
logged results of a logged query are relevant; the other top candidates are not). The weights are
kept non-negative, so relevance never decreases when either signal grows.

``HybridRetriever`` is the environment's ``Searcher`` (the reward stage built on it is
:class:`csrl.rewards.retrieval.RetrievalReward`); :func:`retrieval_recall` measures the search on
held-out logged tool turns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csrl.data.schema import Conversation, KBDocument
from csrl.rewards.context import Need
from csrl.rewards.search.bm25 import BM25Index, check_k, check_texts, normalize_by_best, tokenize
from csrl.rewards.search.dense_index import DenseIndex

FEATURES = ("bm25_ratio", "cosine")
_CALIBRATION_FILE = "calibration.json"
_RETRIEVER_FILE = "retriever.json"


def document_text(doc: KBDocument) -> str:
    """The text indexed for a document: its title (task and label words) then its text."""
    return f"{doc.title.replace('_', ' ')}: {doc.text}" if doc.title else doc.text


def documents_fingerprint(documents: Sequence[KBDocument]) -> str:
    """A short hash of the documents' ids and indexed texts, to refuse a cache built for another KB."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.id.encode("utf-8") + b"\0" + document_text(doc).encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Calibration:
    """Logistic map from ``(bm25_ratio, cosine)`` to a relevance in [0, 1].

    The default (before fitting) is the fit on STAR's training tool turns, rounded: a document that
    BM25 ranks best for the query and whose cosine is 0.5 scores ~0.93; an unrelated one
    (ratio 0, cosine 0.1) ~0.01.

    >>> cal = Calibration()
    >>> [round(float(p), 3) for p in cal(np.array([0.0, 1.0]), np.array([0.1, 0.5]))]
    [0.008, 0.931]
    """

    w_bm25: float = 5.0
    w_cosine: float = 6.0
    bias: float = -5.4
    n_fit: int = 0

    def __post_init__(self):
        if self.w_bm25 < 0 or self.w_cosine < 0:
            raise ValueError(
                f"calibration weights must be >= 0 (monotone relevance), got {self.w_bm25}, {self.w_cosine}"
            )

    def __call__(self, bm25_ratio: np.ndarray, cosine: np.ndarray) -> np.ndarray:
        """Relevance in [0, 1], elementwise (float32, same shape as the inputs)."""
        logits = self.w_bm25 * np.asarray(bm25_ratio) + self.w_cosine * np.asarray(cosine) + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "features": list(FEATURES),
            "w_bm25": self.w_bm25,
            "w_cosine": self.w_cosine,
            "bias": self.bias,
            "n_fit": self.n_fit,
        }

    @classmethod
    def from_dict(cls, record: dict) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        if record.get("features") != list(FEATURES):
            raise ValueError(f"calibration features {record.get('features')} differ from {list(FEATURES)}")
        return cls(float(record["w_bm25"]), float(record["w_cosine"]), float(record["bias"]), int(record["n_fit"]))


class HybridRetriever:
    """BM25 + dense search over a knowledge base, ranked by calibrated relevance (the env's ``Searcher``).

    Args:
        documents: the knowledge base (at least one document, unique ids).
        encoder: the shared :class:`csrl.rewards.encoder.TextEncoder` (anything with ``encode(list) -> (n, dim)``).
        dense_kind: the FAISS index: ``"auto"`` (exact up to 20k documents, HNSW above), ``"flat"``, ``"hnsw"``
            or ``"ivf"`` (:class:`~csrl.rewards.search.dense_index.DenseIndex`).
        candidates: documents taken from each of BM25 and dense per query before re-ranking.
        calibration: the relevance map; :meth:`fit_calibration` replaces it.
        doc_vectors: precomputed ``(n_docs, dim)`` embeddings of :func:`document_text` (skips encoding).
        _dense: a ready :class:`DenseIndex` (used by :meth:`load`).

    """

    def __init__(
        self,
        documents: Sequence[KBDocument],
        encoder,
        *,
        dense_kind: str = "auto",
        candidates: int = 50,
        calibration: Calibration | None = None,
        doc_vectors: np.ndarray | None = None,
        _dense: DenseIndex | None = None,
    ):
        if isinstance(documents, (str, KBDocument)):
            raise TypeError("documents must be a list of KBDocument, got a single one; wrap it in a list")
        documents = list(documents)
        if not documents:
            raise ValueError("cannot build a retriever over an empty knowledge base: pass at least one KBDocument")
        for i, doc in enumerate(documents):
            if not isinstance(doc, KBDocument):
                raise TypeError(f"documents[{i}] must be a KBDocument, got {type(doc).__name__}")
        self.id_to_index = {doc.id: i for i, doc in enumerate(documents)}
        if len(self.id_to_index) != len(documents):
            raise ValueError("document ids must be unique: the retriever matches logged results by id")
        self.documents = documents
        self.encoder = encoder
        self.candidates = check_k(candidates)
        self.calibration = calibration or Calibration()
        texts = [document_text(d) for d in documents]
        self.bm25 = BM25Index(texts)
        if _dense is None:
            vectors = encoder.encode(texts) if doc_vectors is None else doc_vectors
            _dense = DenseIndex(vectors, kind=dense_kind)
        if len(_dense) != len(documents):
            raise ValueError(f"{len(_dense)} document vectors for {len(documents)} documents")
        self.dense = _dense

    def __len__(self) -> int:
        return len(self.documents)

    # -- relevance ---------------------------------------------------------------------------

    def relevance_matrix(self, queries: Sequence[str], query_vectors: np.ndarray | None = None) -> np.ndarray:
        """Calibrated relevance of every KB document to every query: float32 ``(len(queries), n_docs)``."""
        bm25_ratio, cosine = self.feature_matrices(queries, query_vectors)
        return self.calibration(bm25_ratio, cosine)

    def feature_matrices(
        self, queries: Sequence[str], query_vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(bm25_ratio, cosine)`` of every query against every document, each ``(len(queries), n_docs)``."""
        queries = check_texts(queries, "queries")
        bm25 = self.bm25.scores(queries)
        ratio = normalize_by_best(bm25, bm25.max(axis=1, initial=0.0))
        vectors = self.encoder.encode(queries) if query_vectors is None else query_vectors
        return ratio, self.dense.cosines(vectors)

    def relevance(
        self, query_texts: Sequence[str], documents: Sequence[KBDocument | str], calibration: Calibration | None = None
    ) -> np.ndarray:
        """Calibrated relevance of each ``(query_texts[i], documents[i])`` pair: float32 ``(n,)`` in [0, 1].

        A document may be a KB document (its cached embedding is used) or any text (embedded now);
        BM25 is normalised by the query's best score over the KB either way.
        """
        query_texts = check_texts(query_texts, "query_texts")
        if isinstance(documents, (str, KBDocument)):
            raise TypeError("documents must be a list (one per query), got a single document; wrap it in a list")
        documents = list(documents)
        if len(documents) != len(query_texts):
            raise ValueError(f"relevance needs one document per query, got {len(query_texts)} and {len(documents)}")
        texts = [document_text(d) if isinstance(d, KBDocument) else d for d in documents]
        check_texts(texts, "documents")
        ratio = self.bm25.normalized_pairs(query_texts, texts)
        query_vectors = self.encoder.encode(query_texts)
        doc_vectors = np.zeros_like(query_vectors)
        missing = []
        for i, doc in enumerate(documents):
            index = self.id_to_index.get(doc.id) if isinstance(doc, KBDocument) else None
            if index is not None and self.documents[index] == doc:
                doc_vectors[i] = self.dense.vectors[index]
            else:
                missing.append(i)
        if missing:
            doc_vectors[missing] = self.encoder.encode([texts[i] for i in missing])
        return (calibration or self.calibration)(ratio, np.einsum("ij,ij->i", query_vectors, doc_vectors))

    # -- search ------------------------------------------------------------------------------

    def search_indices(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` document indices per query by calibrated relevance, among BM25 and dense candidates.

        ``k`` larger than the KB is clipped. Returns int64 indices and float32 relevances, ``(Q, min(k, n_docs))``.
        """
        queries = check_texts(queries, "queries")
        k = min(check_k(k), len(self))
        pool = min(max(self.candidates, k), len(self))
        vectors = self.encoder.encode(queries)
        bm25 = self.bm25.scores(queries)  # (Q, N)
        best = bm25.max(axis=1, initial=0.0)
        dense_top, _ = self.dense.search(vectors, pool)  # (Q, pool)
        bm25_top = np.argpartition(-bm25, pool - 1, axis=1)[:, :pool] if pool < len(self) else dense_top
        out_indices = np.zeros((len(queries), k), dtype=np.int64)
        out_scores = np.zeros((len(queries), k), dtype=np.float32)
        for q in range(len(queries)):
            cands = np.unique(np.concatenate([dense_top[q][dense_top[q] >= 0], bm25_top[q]]))
            ratio = normalize_by_best(bm25[q, cands][None], best[q : q + 1])[0]
            relevance = self.calibration(ratio, self.dense.vectors[cands] @ vectors[q])
            order = np.argsort(-relevance, kind="stable")[:k]
            out_indices[q], out_scores[q] = cands[order], relevance[order]
        return out_indices, out_scores

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[KBDocument, float]]]:
        """The ``Searcher`` protocol: top ``k`` ``(document, relevance in [0, 1])`` per query, best first."""
        indices, scores = self.search_indices(queries, k)
        return [
            [(self.documents[i], float(s)) for i, s in zip(row_i, row_s, strict=True)]
            for row_i, row_s in zip(indices, scores, strict=True)
        ]

    # -- calibration -------------------------------------------------------------------------

    def fit_calibration(
        self,
        conversations: Sequence[Conversation],
        *,
        searches: list[tuple[str, set[int]]] | None = None,
        max_queries: int = 2000,
        negatives: int = 10,
        seed: int = 0,
    ) -> Calibration:
        """Fit the relevance map on logged tool turns (or on ``searches`` made otherwise) and install it.

        For each sampled tool turn (query with results), the logged results that are in the KB are
        positives. Negatives are the ``negatives`` best-ranked documents of *other* intents (hard
        negatives) plus as many random documents of other intents. Same-intent candidates are left out on purpose:
        STAR's mock database returns one of many records that match a query equally well (e.g. a
        dozen "San Francisco, Sunday" weather records), so calling them irrelevant teaches the map
        that matching the query is bad. Classes are balanced, so 0.5 means "as likely relevant as not".

        Raises:
            ValueError: if the conversations hold no tool turn whose results are in the KB.

        """
        self.calibration = fit_relevance_map(
            self,
            logged_searches(conversations, self.id_to_index) if searches is None else searches,
            max_queries=max_queries,
            negatives=negatives,
            seed=seed,
        )
        return self.calibration

    # -- persistence -------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the dense index (the KB embeddings), the calibration and a KB fingerprint into ``folder``."""
        folder = Path(folder)
        self.dense.save(folder)
        (folder / _CALIBRATION_FILE).write_text(json.dumps(self.calibration.to_dict(), indent=2))
        meta = {
            "n_docs": len(self),
            "fingerprint": documents_fingerprint(self.documents),
            "candidates": self.candidates,
            "encoder": getattr(self.encoder, "name", None),
        }
        (folder / _RETRIEVER_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path, documents: Sequence[KBDocument], encoder) -> HybridRetriever:
        """Rebuild a saved retriever without re-embedding the KB (BM25 is re-indexed: it takes a second).

        Raises:
            FileNotFoundError: if ``folder`` holds no saved retriever.
            ValueError: if ``documents`` are not the ones the folder was built from.

        """
        folder = Path(folder)
        if not (folder / _RETRIEVER_FILE).exists():
            raise FileNotFoundError(
                f"no saved retriever in {folder}: expected {_RETRIEVER_FILE} (HybridRetriever.save)"
            )
        meta = json.loads((folder / _RETRIEVER_FILE).read_text())
        documents = list(documents)
        if documents_fingerprint(documents) != meta["fingerprint"]:
            raise ValueError(
                f"{folder} was built for another knowledge base ({meta['n_docs']} documents, fingerprint "
                f"{meta['fingerprint']}); got {len(documents)} documents: rebuild the retriever for this KB"
            )
        calibration = Calibration.from_dict(json.loads((folder / _CALIBRATION_FILE).read_text()))
        return cls(
            documents, encoder, candidates=meta["candidates"], calibration=calibration, _dense=DenseIndex.load(folder)
        )


def fit_relevance_map(
    retriever: HybridRetriever,
    searches: list[tuple[str, set[int]]],
    *,
    max_queries: int = 2000,
    negatives: int = 10,
    seed: int = 0,
) -> Calibration:
    """Fit a :class:`Calibration` on ``(query, relevant KB indices)`` pairs (see ``fit_calibration``)."""
    from sklearn.linear_model import LogisticRegression

    turns = list(searches)
    if not turns:
        raise ValueError("no logged tool turn with results in the KB: pass training conversations with tool turns")
    rng = np.random.default_rng(seed)
    if len(turns) > max_queries:
        turns = [turns[i] for i in sorted(rng.choice(len(turns), max_queries, replace=False))]
    ratio, cosine = retriever.feature_matrices([q for q, _ in turns])
    intents = np.array([d.intent or "" for d in retriever.documents])
    features, labels = [], []
    for row, (_, relevant) in enumerate(turns):
        gold_intents = {intents[i] for i in relevant}
        if gold_intents == {""}:  # a KB without intents: every other document is a negative
            other = np.ones(len(intents), dtype=bool)
            other[list(relevant)] = False
        else:
            other = ~np.isin(intents, list(gold_intents))
        ranked = np.argsort(-(ratio[row] + cosine[row]))  # hard negatives: high on both signals
        hard = ranked[other[ranked]][:negatives]
        pool = np.flatnonzero(other)
        easy = rng.choice(pool, size=min(negatives, len(pool)), replace=False)
        for i, label in [(i, 1) for i in relevant] + [(i, 0) for i in [*hard, *easy]]:
            features.append((ratio[row, i], cosine[row, i]))
            labels.append(label)
    if len(set(labels)) < 2:
        raise ValueError("calibration needs relevant and irrelevant documents: the KB has a single intent")
    model = LogisticRegression(class_weight="balanced", C=10.0).fit(np.array(features), np.array(labels))
    w_bm25, w_cosine = (max(0.0, float(w)) for w in model.coef_[0])  # monotone by construction
    return Calibration(w_bm25, w_cosine, float(model.intercept_[0]), n_fit=len(labels))


def logged_searches(
    conversations: Sequence[Conversation],
    id_to_index: dict[str, int],
    *,
    as_need: bool = False,
    need_messages: int | None = None,
) -> list[tuple[str, set[int]]]:
    """``(query, indices of its logged results in the KB)`` for every tool turn with results in the KB.

    With ``as_need`` the query is instead the customer's messages before the tool turn, newest first
    (the last ``need_messages`` of them, or all): what :class:`RetrievalReward` calls the need.
    Turns before any customer message are then skipped.
    """
    searches = []
    for conversation in conversations:
        said: list[str] = []
        for turn in conversation.turns:
            if turn.role == "customer":
                said.append(turn.text)
            if turn.role == "tool" and turn.query and turn.results:
                relevant = {id_to_index[d.id] for d in turn.results if d.id in id_to_index}
                if not relevant:
                    continue
                if not as_need:
                    searches.append((turn.query, relevant))
                elif said:
                    searches.append((Need(said[-(need_messages or len(said)) :][::-1]), relevant))
    return searches


def answer_supported_searches(
    conversations: Sequence[Conversation],
    retriever: HybridRetriever,
    *,
    as_need: bool = False,
    need_messages: int | None = None,
    min_relevance: float = 0.5,
    max_answers: int = 4000,
    seed: int = 0,
) -> list[tuple[str, set[int]]]:
    """``(query, {the KB document that best supports the agent's answer})`` for logs without logged lookups.

    What the customer said before an informative agent answer is paired with the KB document that answer
    is best grounded in (the retriever's most relevant document for the answer's text, if its relevance
    reaches ``min_relevance``): the lookup the agent would have logged. The query is the customer's last
    message, or with ``as_need`` their messages newest first (the last ``need_messages``, or all), as
    :func:`logged_searches` makes them. At most ``max_answers`` answers (seeded sample) are searched.
    """
    from csrl.rewards.answer_kb import is_informative_answer

    pairs = []
    for conversation in conversations:
        said: list[str] = []
        for turn in conversation.turns:
            if turn.role == "customer":
                said.append(turn.text)
            elif turn.role == "agent" and said and is_informative_answer(turn.text):
                query = Need(said[-(need_messages or len(said)) :][::-1]) if as_need else said[-1]
                pairs.append((query, turn.text))
    if len(pairs) > max_answers:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_answers, replace=False))
        pairs = [pairs[i] for i in keep]
    if not pairs:
        return []
    indices, scores = retriever.search_indices([answer for _, answer in pairs], k=1)  # (P, 1) each
    return [(query, {int(indices[p, 0])}) for p, (query, _) in enumerate(pairs) if scores[p, 0] >= min_relevance]


def retrieval_recall(
    retriever: HybridRetriever,
    conversations: Sequence[Conversation],
    ks: Sequence[int] = (1, 5),
    *,
    searches: list[tuple[str, set[int]]] | None = None,
) -> dict[str, float]:
    """Share of logged tool turns whose logged result is among the retriever's top ``k`` for the logged query.

    ``recall@k`` matches by document id. ``recall_equivalent@k`` also accepts a document that the
    query cannot tell apart from the logged result: same intent, and it contains every query token
    that the logged result contains. The second exists because STAR's mock database answers a
    query with one of several records that match it equally (weather for "San Francisco, Sunday"
    has a dozen records with different temperatures), which caps id recall well below 1.

    ``searches`` replaces the logged tool turns (e.g. :func:`answer_supported_searches` for logs without them).

    Returns:
        ``{"recall@1", "recall@5", "recall_equivalent@1", "recall_equivalent@5", "n"}`` (for ``ks=(1, 5)``).

    Raises:
        ValueError: if no tool turn has a result in the retriever's KB.

    """
    ks = [check_k(k) for k in ks]
    if searches is None:
        searches = logged_searches(conversations, retriever.id_to_index)
    if not searches:
        raise ValueError("no logged tool turn with results in the KB: pass conversations with tool turns")
    indices, _ = retriever.search_indices([q for q, _ in searches], max(ks))
    tokens: dict[int, set[str]] = {}

    def words(i: int) -> set[str]:
        if i not in tokens:
            tokens[i] = set(tokenize(document_text(retriever.documents[i])))
        return tokens[i]

    exact = {k: [] for k in ks}
    equivalent = {k: [] for k in ks}
    for row, (query, relevant) in zip(indices.tolist(), searches, strict=True):
        query_words = set(tokenize(query))
        signatures = [(retriever.documents[g].intent, query_words & words(g)) for g in relevant]
        for k in ks:
            top = row[:k]
            exact[k].append(bool(relevant.intersection(top)))
            equivalent[k].append(
                any(
                    retriever.documents[i].intent == intent and needed <= words(i)
                    for i in top
                    for intent, needed in signatures
                )
            )
    result: dict[str, float] = {}
    for k in ks:
        result[f"recall@{k}"] = round(float(np.mean(exact[k])), 4)
    for k in ks:
        result[f"recall_equivalent@{k}"] = round(float(np.mean(equivalent[k])), 4)
    result["n"] = len(searches)
    return result
