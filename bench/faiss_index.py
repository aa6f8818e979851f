"""The FAISS index by KB size: recall@10 against exact search and query time of flat, HNSW and IVF.

Documents are real embeddings (the reward's encoder) of STAR's texts: its distinct utterances and its distinct
pairs of consecutive turns, shuffled; 1,000 further distinct utterances are the queries. Per size and index:
build seconds, batched query time (all queries in one call), single-query p50 (one at a time, as ``csrl score``
asks), recall@10 against flat, and the index's size on disk. ``DenseIndex(kind="auto")`` picks by these figures.

    .venv/bin/python bench/faiss_index.py [--sizes 10000,100000] [--cache runs/bench]

Embedding 100k texts takes minutes on 2 cores; they are cached in ``--cache`` for reruns.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from csrl.data import load_corpus
from csrl.rewards.encoder import TextEncoder
from csrl.rewards.search.dense_index import FLAT_MAX_DOCS, DenseIndex, choose_kind


def star_texts(seed: int) -> list[str]:
    """STAR's distinct utterances and distinct consecutive-turn pairs, shuffled."""
    texts: dict[str, None] = {}
    for conversation in load_corpus("star").conversations:
        turns = [t.text.strip() for t in conversation.turns if t.role in ("customer", "agent") and t.text.strip()]
        texts.update(dict.fromkeys(turns))
        texts.update(dict.fromkeys(f"{a}\n{b}" for a, b in zip(turns, turns[1:], strict=False)))
    order = np.random.default_rng(seed).permutation(len(texts))
    listed = list(texts)
    return [listed[i] for i in order]


def embeddings(texts: list[str], cache: Path, seed: int) -> np.ndarray:
    """The encoder's vectors of ``texts``, cached on disk by count and seed."""
    path = cache / f"faiss_bench_{len(texts)}_{seed}.npy"
    if path.is_file():
        return np.load(path)
    began = time.perf_counter()
    vectors = TextEncoder().encode(texts)
    print(f"embedded {len(texts):,} texts in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def measure(documents: np.ndarray, queries: np.ndarray, kind: str, exact: np.ndarray | None):
    """Build one index over ``documents``; time its queries; recall@10 against ``exact`` (flat's top 10).

    Returns the row of figures and the indices it found (flat's are the next indexes' ``exact``)."""
    began = time.perf_counter()
    index = DenseIndex(documents, kind=kind)
    build_s = time.perf_counter() - began
    began = time.perf_counter()
    found, _ = index.search(queries, k=10)
    batched_ms = (time.perf_counter() - began) / len(queries) * 1000
    singles = []
    for query in queries[:200]:
        began = time.perf_counter()
        index.search(query[None, :], k=10)
        singles.append((time.perf_counter() - began) * 1000)
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        disk_mb = sum(f.stat().st_size for f in Path(folder).iterdir()) / 1e6
    row = {
        "kind": index.kind,
        "build_s": round(build_s, 2),
        "query_ms_batched": round(batched_ms, 4),
        "query_ms_single_p50": round(float(np.median(singles)), 4),
        "disk_mb": round(disk_mb, 1),
    }
    if exact is not None:
        hits = [len(set(f) & set(e)) / 10 for f, e in zip(found.tolist(), exact.tolist(), strict=True)]
        row["recall_at_10"] = round(float(np.mean(hits)), 4)
    return row, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated KB sizes")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/bench", help="folder for the cached embeddings")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = star_texts(args.seed)
    needed = max(sizes) + args.queries
    if len(texts) < needed:
        raise SystemExit(f"STAR gives {len(texts):,} distinct texts; --sizes and --queries need {needed:,}")
    vectors = embeddings(texts[:needed], Path(args.cache), args.seed)
    queries, pool = vectors[: args.queries], vectors[args.queries :]
    report = {"documents": "STAR utterances and consecutive-turn pairs", "queries": args.queries,
              "flat_max_docs": FLAT_MAX_DOCS, "sizes": {}}  # fmt: skip
    for size in sizes:
        documents = pool[:size]
        flat, exact = measure(documents, queries, "flat", None)
        rows = {"flat": flat}
        for kind in ("hnsw", "ivf"):
            rows[kind], _ = measure(documents, queries, kind, exact)
            for mode in ("single_p50", "batched"):
                speedup = flat[f"query_ms_{mode}"] / rows[kind][f"query_ms_{mode}"]
                rows[kind][f"{mode}_speedup_over_flat"] = round(speedup, 2)
        rows["auto"] = choose_kind("auto", size)
        report["sizes"][str(size)] = rows
        print(json.dumps({str(size): rows}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
