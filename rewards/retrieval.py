"""The knowledge-retrieval reward stage: relevance in [0, 1] of the knowledge a turn used to the customer's need.

The search engine it scores with (BM25 + dense, calibrated) is :mod:`csrl.rewards.search.retriever`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csrl.data.schema import Conversation
from csrl.rewards.context import Need
from csrl.rewards.search.bm25 import lucene_idf, tokenize
from csrl.rewards.search.retriever import Calibration, HybridRetriever, fit_relevance_map, logged_searches

_REWARD_FILE = "retrieval_reward.json"


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

    def fit(
        self, conversations: Sequence[Conversation], *, searches: list[tuple[str, set[int]]] | None = None, **kwargs
    ) -> Calibration:
        """Fit the need -> document relevance map on logged tool turns (the customer's words before each).

        ``searches`` replaces the logged tool turns (``(need, relevant KB indices)`` pairs made otherwise, e.g.
        :func:`~csrl.rewards.search.retriever.answer_supported_searches`). Keyword arguments go to
        :func:`fit_relevance_map`.
        """
        if searches is None:
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
        return Need(ctx.customer_messages()[-self.need_messages :][::-1])

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
