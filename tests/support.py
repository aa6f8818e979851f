"""A KB search test double shared by the environment and rollout tests (no encoder, no index)."""

from __future__ import annotations

import re


class KeywordSearcher:
    """Documents sharing a word with the query, best overlap first (the env's ``searcher`` interface)."""

    def __init__(self, documents):
        self.documents = list(documents)

    def search(self, queries, k):
        """Top ``k`` ``(document, overlap)`` pairs per query; documents sharing no word are left out."""
        out = []
        for q in queries:
            words = set(re.findall(r"\w+", q.lower()))
            scored = [(d, len(words & set(re.findall(r"\w+", d.text.lower())))) for d in self.documents]
            out.append([(d, float(s)) for d, s in sorted(scored, key=lambda x: -x[1]) if s > 0][:k])
        return out
