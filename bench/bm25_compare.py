"""bm25s (through the project's BM25Index) vs rank-bm25 on STAR texts: index time, queries/s, top-10 overlap. JSON out.

Corpora: the STAR knowledge base, and synthetic corpora of N documents, each three random STAR
utterances or KB texts joined (seeded). Queries: logged STAR tool queries and customer messages.
Both libraries get the same tokens (``csrl.rewards.search.bm25.tokenize``). rank-bm25 is run twice: as shipped
(``BM25Okapi``, which floors negative idf at 0.25 x mean idf) and with ``epsilon=0``. rank-bm25 is
slow at 100k documents, so it answers fewer queries there; overlap is measured on the shared queries.
Both get distinct query tokens. STAR has many documents with equal scores (records that differ only
in fields the query does not name), so the strict id overlap of two top-10s depends on tie order;
the tie-aware overlap counts a document tied with our 10th best as shared.

Run: .venv/bin/python bench/bm25_compare.py [--sizes 10000 100000] [--queries 200] [--rank-queries 100 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from rank_bm25 import BM25Okapi

from csrl.data import load_corpus
from csrl.rewards.search.bm25 import BM25Index, tokenize

TOP = 10


def synthetic_corpus(pool: list[str], size: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(pool), size=(size, 3))
    return [" ".join(pool[i] for i in row) for row in picks]


def rank_bm25_top(model: BM25Okapi, query_tokens: list[list[str]]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    tops = []
    for tokens in query_tokens:
        scores = model.get_scores(tokens)
        tops.append(np.argsort(-scores, kind="stable")[:TOP])
    return np.array(tops), time.perf_counter() - start


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Strict top-10 overlap: shared document ids / 10."""
    return float(np.mean([len(set(x) & set(y)) / TOP for x, y in zip(a, b, strict=True)]))


def tie_aware_overlap(our_scores: np.ndarray, theirs: np.ndarray) -> float:
    """Share of their top-10 that scores at least our 10th-best score (a tie with our top-10 counts)."""
    kth = np.sort(our_scores, axis=1)[:, -TOP][:, None]
    return float(np.mean(np.take_along_axis(our_scores, theirs, axis=1) >= kth - 1e-6))


def compare(name: str, texts: list[str], queries: list[str], rank_queries: int) -> dict:
    start = time.perf_counter()
    index = BM25Index(texts)
    bm25s_index_s = time.perf_counter() - start
    start = time.perf_counter()
    ours, _ = index.search(queries, TOP)
    bm25s_qps = len(queries) / (time.perf_counter() - start)

    start = time.perf_counter()
    corpus_tokens = [tokenize(t) for t in texts]
    okapi = BM25Okapi(corpus_tokens)
    rank_index_s = time.perf_counter() - start
    okapi_eps0 = BM25Okapi(corpus_tokens, epsilon=0.0)
    # distinct query tokens: BM25Index counts a repeated query word once, rank-bm25 would count it again
    subset = [list(dict.fromkeys(tokenize(q))) for q in queries[:rank_queries]]
    okapi_top, okapi_s = rank_bm25_top(okapi, subset)
    eps0_top, _ = rank_bm25_top(okapi_eps0, subset)
    rank_qps = len(subset) / okapi_s
    our_scores = index.scores(queries[: len(subset)])
    return {
        "corpus": name,
        "documents": len(texts),
        "bm25s": {"index_s": round(bm25s_index_s, 2), "queries_per_s": round(bm25s_qps, 1), "queries": len(queries)},
        "rank_bm25": {"index_s": round(rank_index_s, 2), "queries_per_s": round(rank_qps, 2), "queries": len(subset)},
        "speedup_queries": round(bm25s_qps / rank_qps, 1),
        "top10_overlap_okapi": round(overlap(ours[: len(subset)], okapi_top), 3),
        "top10_overlap_okapi_epsilon0": round(overlap(ours[: len(subset)], eps0_top), 3),
        "top10_overlap_tie_aware_okapi": round(tie_aware_overlap(our_scores, okapi_top), 3),
        "top10_overlap_tie_aware_okapi_epsilon0": round(tie_aware_overlap(our_scores, eps0_top), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--rank-queries",
        type=int,
        nargs="*",
        default=None,
        help="queries rank-bm25 answers: one for the KB, then one per size (default 200, 100, 20)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rank_queries = args.rank_queries or [200, *([100, 20, 20, 20][: len(args.sizes)])]
    if len(rank_queries) != len(args.sizes) + 1:
        parser.error("--rank-queries takes one count for the KB and one per --sizes entry")

    corpus = load_corpus("star")
    rng = np.random.default_rng(args.seed)
    logged = [t.query for c in corpus.split("test") for t in c.turns if t.role == "tool" and t.query]
    said = [t.text for c in corpus.split("test") for t in c.turns if t.role == "customer" and t.text.strip()]
    half = args.queries // 2
    queries = [logged[i] for i in rng.choice(len(logged), half, replace=False)]
    queries += [said[i] for i in rng.choice(len(said), args.queries - half, replace=False)]
    queries = [queries[i] for i in rng.permutation(len(queries))]  # mix both kinds into the rank-bm25 subset

    pool = [t.text for c in corpus.conversations for t in c.turns if t.text.strip()]
    pool += [d.text for d in corpus.knowledge_base]
    kb_texts = [d.text for d in corpus.knowledge_base]
    results = [compare("star_kb", kb_texts, queries, rank_queries[0])]
    for size, n in zip(args.sizes, rank_queries[1:], strict=True):
        results.append(compare(f"synthetic_{size}", synthetic_corpus(pool, size, args.seed), queries, n))
    print(json.dumps({"top_k": TOP, "results": results}, indent=2))


if __name__ == "__main__":
    main()
