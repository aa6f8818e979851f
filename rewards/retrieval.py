"""Hybrid knowledge-base retrieval (BM25 + dense) with a calibrated relevance, and its recall on the logs.

A document's relevance to a query is a logistic regression over two features::

    bm25_ratio = BM25(query, doc) / best BM25(query, any KB doc)      in [0, 1]
    cosine     = <encoder(query), encoder(doc)>                         in [-1, 1]
    relevance  = sigmoid(w_bm25 * bm25_ratio + w_cos * cosine + bias)   in [0, 1]

fitted by :meth:`HybridRetriever.fit_calibration` on the training split's logged tool turns (the
logged results of a logged query are relevant; the other top candidates are not). The weights are
kept non-negative, so relevance never decreases when either signal grows.

``HybridRetriever`` is the environment's ``Searcher``; :class:`RetrievalReward` is the reward stage
built on it, and :func:`retrieval_recall` measures the search on held-out logged tool turns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.schema import Conversation, KBDocument
from rewards.bm25 import BM25Index, check_k, check_texts, lucene_idf, normalize_by_best, tokenize
from rewards.dense_index import DenseIndex

FEATURES = ("bm25_ratio", "cosine")
_CALIBRATION_FILE = "calibration.json"
_RETRIEVER_FILE = "retriever.json"
_REWARD_FILE = "retrieval_reward.json"


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
        encoder: the shared :class:`rewards.encoder.TextEncoder` (anything with ``encode(list) -> (n, dim)``).
        dense_kind: ``"flat"`` (exact) or ``"hnsw"`` (large KBs).
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
        dense_kind: str = "flat",
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
        self, conversations: Sequence[Conversation], *, max_queries: int = 2000, negatives: int = 10, seed: int = 0
    ) -> Calibration:
        """Fit the relevance map on logged tool turns and install it.

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
            logged_searches(conversations, self.id_to_index),
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
                    searches.append((" ".join(said[-(need_messages or len(said)) :][::-1]), relevant))
    return searches


def retrieval_recall(
    retriever: HybridRetriever, conversations: Sequence[Conversation], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Share of logged tool turns whose logged result is among the retriever's top ``k`` for the logged query.

    ``recall@k`` matches by document id. ``recall_equivalent@k`` also accepts a document that the
    query cannot tell apart from the logged result: same intent, and it contains every query token
    that the logged result contains. The second exists because STAR's mock database answers a
    query with one of several records that match it equally (weather for "San Francisco, Sunday"
    has a dozen records with different temperatures), which caps id recall well below 1.

    Returns:
        ``{"recall@1", "recall@5", "recall_equivalent@1", "recall_equivalent@5", "n"}`` (for ``ks=(1, 5)``).

    Raises:
        ValueError: if no tool turn has a result in the retriever's KB.

    """
    ks = [check_k(k) for k in ks]
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


# The need -> document map fitted by RetrievalReward.fit on STAR's training split (rounded): a
# customer's words and a record share few exact terms once normalised by the need's best BM25 match,
# so the fit puts all the weight on the cosine (0.5 at a cosine of 0.24, 0.9 at 0.49).
NEED_CALIBRATION = Calibration(w_bm25=0.0, w_cosine=8.7, bias=-2.1)


class RetrievalReward:
    """Reward stage: relevance in [0, 1] of the knowledge a turn used to the customer's need.

    - The need is the customer's messages, newest first (all of them: ``ctx.need_text()``, or the last
      ``need_messages``); no customer message yet -> 0.
    - A turn that searched (or a bot that sent documents) used ``ctx.knowledge``: the score is the
      best calibrated relevance of those documents to the need (an empty result list -> 0).
    - A turn that used none is credited with the KB documents that best support its reply, but only
      for what the reply adds beyond the customer's own words: support(reply -> doc) is the
      retriever's calibrated relevance with BM25 on the reply's tokens that no customer message
      contains and the cosine of the whole reply. The score is ``max over documents of
      support(reply -> doc) * relevance(need -> doc)``, times the reply's substance (the idf mass
      of its added words over that of ``substance_words`` rarest words, capped at 1). So a parrot
      of the customer (adds nothing) scores 0, "ok"/"thanks" (little idf mass) score near 0, and a
      reply grounded in a document about another need scores low.

    One encoder pass per batch embeds the needs and replies (the same strings the intent and
    satisfaction stages embed, so the shared cache serves them once); KB embeddings are precomputed.
    BM25 and cosine are computed against the whole KB as ``(batch, n_docs)`` matrices.

    Args:
        retriever: the fitted :class:`HybridRetriever` (its KB, encoder and calibration, used for the
            reply -> document support).
        need_calibration: the need -> document relevance map; :meth:`fit` fits it on the logs.
            Default: :data:`NEED_CALIBRATION`.
        need_messages: customer messages that make the need (newest first); ``None`` = all of them.
        substance_words: how many rarest-word equivalents of added idf make a reply fully informative
            (1.5: in STAR ~13 nats, three or four mid-frequency words).

    """

    def __init__(
        self,
        retriever: HybridRetriever,
        *,
        need_calibration: Calibration | None = None,
        substance_words: float = 1.5,
        need_messages: int | None = None,
    ):
        if substance_words <= 0:
            raise ValueError(f"substance_words={substance_words}: must be > 0 (default 1.5)")
        if need_messages is not None and need_messages < 1:
            raise ValueError(f"need_messages={need_messages}: the need is at least the last customer message")
        self.retriever = retriever
        self.need_calibration = need_calibration or NEED_CALIBRATION
        self.substance_words = float(substance_words)
        self.need_messages = need_messages

    def fit(self, conversations: Sequence[Conversation], **kwargs) -> Calibration:
        """Fit the need -> document relevance map on logged tool turns (the customer's words before each).

        Keyword arguments go to :func:`fit_relevance_map`.
        """
        searches = logged_searches(
            conversations, self.retriever.id_to_index, as_need=True, need_messages=self.need_messages
        )
        self.need_calibration = fit_relevance_map(self.retriever, searches, **kwargs)
        return self.need_calibration

    def save(self, folder: str | Path) -> None:
        """Write the stage's settings and need calibration to ``folder/retrieval_reward.json``."""
        record = {
            "need_calibration": self.need_calibration.to_dict(),
            "substance_words": self.substance_words,
            "need_messages": self.need_messages,
        }
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / _REWARD_FILE).write_text(json.dumps(record, indent=2))

    @classmethod
    def load(cls, folder: str | Path, retriever: HybridRetriever) -> RetrievalReward:
        """Inverse of :meth:`save` (the retriever is loaded separately with :meth:`HybridRetriever.load`)."""
        path = Path(folder) / _REWARD_FILE
        if not path.exists():
            raise FileNotFoundError(f"no saved retrieval reward in {folder}: expected {_REWARD_FILE}")
        record = json.loads(path.read_text())
        return cls(
            retriever,
            need_calibration=Calibration.from_dict(record["need_calibration"]),
            substance_words=record["substance_words"],
            need_messages=record["need_messages"],
        )

    def need(self, ctx) -> str:
        """The customer's need: their messages newest first (the last ``need_messages``, or all).

        With all messages this is ``ctx.need_text()``, the string the intent stage embeds too, so the
        shared encoder's cache makes it free; the encoder's truncation keeps the newest messages.
        """
        if self.need_messages is None:
            return ctx.need_text()
        return " ".join(ctx.customer_messages()[-self.need_messages :][::-1])

    def added_words(self, ctx) -> list[str]:
        """The reply's tokens that no customer message contains, in order, each once."""
        said = {t for message in ctx.customer_messages() for t in tokenize(message)}
        return [t for t in dict.fromkeys(tokenize(ctx.reply)) if t not in said]

    def substance(self, words: Sequence[str]) -> float:
        """Idf mass of ``words`` known to the KB, in rarest-word units, over ``substance_words``, capped at 1.

        The unit is the idf of a word found in one document, so the threshold means the same in a
        KB of 30 documents and of 30,000.
        """
        bm25 = self.retriever.bm25
        mass = sum(float(bm25.idf[bm25.vocabulary[w]]) for w in words if w in bm25.vocabulary)
        return min(1.0, mass / (self.substance_words * lucene_idf(1, bm25.n_docs)))

    def score(self, contexts) -> list[float]:
        """One relevance in [0, 1] per turn context (see the class docstring)."""
        contexts = list(contexts)
        if not contexts:
            return []
        retriever = self.retriever
        needs = [self.need(ctx) for ctx in contexts]
        unsupported = [i for i, ctx in enumerate(contexts) if ctx.knowledge is None]
        added = {i: self.added_words(contexts[i]) for i in unsupported}
        support_queries = [" ".join(added[i]) for i in unsupported]
        # one encoder pass for the batch; needs and replies are the strings the intent and satisfaction
        # stages embed too, so in the composite they come from the shared cache
        vectors = retriever.encoder.encode(needs + [contexts[i].reply for i in unsupported])
        need_relevance = self.need_calibration(*retriever.feature_matrices(needs, vectors[: len(needs)]))  # (B, N)
        scores = np.zeros(len(contexts), dtype=np.float64)
        for i, ctx in enumerate(contexts):
            if not needs[i].strip() or ctx.knowledge is None or not ctx.knowledge:
                continue
            in_kb = [retriever.id_to_index.get(d.id) for d in ctx.knowledge]
            values = [
                need_relevance[i, j]
                for j, d in zip(in_kb, ctx.knowledge, strict=True)
                if j is not None and retriever.documents[j] == d
            ]
            outside = [d for j, d in zip(in_kb, ctx.knowledge, strict=True) if j is None or retriever.documents[j] != d]
            if outside:  # documents a live bot sent that the KB lacks: score the pairs directly
                values.extend(retriever.relevance([needs[i]] * len(outside), outside, self.need_calibration).tolist())
            scores[i] = max(values)
        if unsupported:
            # support: BM25 on the words the reply adds (a parrot adds none), cosine of the whole reply
            support = retriever.relevance_matrix(support_queries, vectors[len(needs) :])  # (B', N)
            for row, i in enumerate(unsupported):
                if not needs[i].strip() or not added[i]:
                    continue
                grounded = float(np.max(support[row] * need_relevance[i]))
                scores[i] = grounded * self.substance(added[i])
        return np.clip(scores, 0.0, 1.0).tolist()
