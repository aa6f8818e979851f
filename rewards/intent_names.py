"""Readable names for discovered intents, from each cluster's own words (class-based TF-IDF, as in BERTopic).

A cluster's messages are one class. A term's weight in a class is its frequency there (L1-normalised per
class, as BERTopic's ``ClassTfidfTransformer`` does) times ``log(1 + A / f_t)``, where ``A`` is the mean
number of counted words per class and ``f_t`` the term's frequency over all classes: frequent in this
cluster and rare elsewhere ranks first. Terms are unigrams and bigrams of scikit-learn's
``CountVectorizer`` with its English stop words; each message is counted on its own, so no bigram spans
two messages. The name joins the distinct words of the top keywords in snake_case (at most three words),
made unique across clusters.

>>> texts = ["my card has not arrived", "when will my new card arrive", "card still not arrived",
...          "what is the exchange rate", "exchange rate for euros", "bad exchange rate applied"]
>>> keywords = cluster_keywords(texts, [0, 0, 0, 1, 1, 1], 2, top=3)
>>> keywords
[['card', 'arrived', 'card arrived'], ['exchange', 'exchange rate', 'rate']]
>>> intent_names(keywords)
['card_arrived', 'exchange_rate']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

NAME_WORDS = 3  # words in a name before it needs more to be unique
_NOT_NAME = re.compile(r"[^\w]+")


def cluster_keywords(texts: Sequence[str], labels: Sequence[int], n_clusters: int, top: int = 10) -> list[list[str]]:
    """The ``top`` c-TF-IDF terms of each cluster ``0 .. n_clusters - 1``, best first (``[]`` for a wordless cluster).

    Args:
        texts: the clustered messages.
        labels: the cluster of each message, in ``range(n_clusters)``.
        n_clusters: how many clusters (a cluster without messages gets ``[]``).
        top: terms kept per cluster.

    >>> cluster_keywords(["is it?", "what about them"], [0, 1], 2)  # stop words only: no terms
    [[], []]
    """
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels, dtype=np.int64)
    if len(texts) != len(labels):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels; pass one cluster label per text")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_clusters):
        raise ValueError(f"labels must lie in range({n_clusters}); got {labels.min()}..{labels.max()}")
    # words of two or more letters: order numbers, invoice ids and amounts say nothing about the intent
    vectorizer = CountVectorizer(stop_words="english", ngram_range=(1, 2), token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
    try:
        counts = vectorizer.fit_transform(texts)  # (n_texts, n_terms), sparse
    except ValueError:  # "empty vocabulary": every text is stop words
        return [[] for _ in range(n_clusters)]
    terms = vectorizer.get_feature_names_out()
    membership = np.zeros((n_clusters, len(texts)), dtype=np.float64)
    membership[labels, np.arange(len(texts))] = 1.0
    tf = np.asarray(counts.T.dot(membership.T).T)  # (n_clusters, n_terms): term counts of each cluster's messages
    # BERTopic weights by unigram+bigram counts alike; A is the mean count per cluster, f_t a term's total count
    mean_words = tf.sum() / max(n_clusters, 1)
    idf = np.log(1.0 + mean_words / np.maximum(tf.sum(axis=0), 1.0))
    weights = tf / np.maximum(tf.sum(axis=1, keepdims=True), 1.0) * idf
    keywords = []
    for c in range(n_clusters):
        order = np.lexsort((terms, -weights[c]))  # best first, ties alphabetical (stable across runs)
        keywords.append([str(terms[t]) for t in order[:top] if weights[c, t] > 0])
    return keywords


def snake_case(text: str) -> str:
    """Lower-case words joined by ``_``.

    >>> snake_case("Card  arrival!"), snake_case("top-up (failed)")
    ('card_arrival', 'top_up_failed')
    """
    return _NOT_NAME.sub("_", text.lower()).strip("_")


def intent_names(keywords: Sequence[Sequence[str]], words: int = NAME_WORDS) -> list[str]:
    """One unique snake_case name per cluster from its keywords (best first).

    A name is the distinct words of the best keywords, at most ``words`` of them; a name already taken
    grows by the next keywords' words, and a cluster whose words are all taken, or that has no
    keywords, is ``intent_<n>`` (``n`` counted from 1) or gets a ``_2``, ``_3`` ... suffix.

    >>> intent_names([["card", "card arrive", "arrive"], ["card"], ["card"], []])
    ['card_arrive', 'card', 'card_2', 'intent_4']
    """
    taken: set[str] = set()
    names = []
    for i, terms in enumerate(keywords):
        vocabulary = list(dict.fromkeys(w for term in terms for w in snake_case(term).split("_") if w))
        candidates = ["_".join(vocabulary[:n]) for n in range(min(words, len(vocabulary)), len(vocabulary) + 1)]
        name = next((c for c in candidates if c and c not in taken), None)
        if name is None:
            base = candidates[0] if candidates and candidates[0] else f"intent_{i + 1}"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names.append(name)
    return names


__all__ = ["cluster_keywords", "intent_names", "snake_case"]
