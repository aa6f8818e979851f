"""How long loading the embedded STAR corpus takes: parse + convert, KB build, splits. JSON out.

Run: .venv/bin/python bench/load_data.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from csrl.data import load_corpus
from csrl.data.star import iter_raw_dialogues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    raw_times, corpus_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        n_raw = sum(1 for _ in iter_raw_dialogues())
        raw_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        corpus = load_corpus("star")
        corpus_times.append(time.perf_counter() - start)
    stats = corpus.stats()
    print(
        json.dumps(
            {
                "raw_dialogues": n_raw,
                "decompress_and_parse_s": round(statistics.median(raw_times), 3),
                "load_corpus_s": round(statistics.median(corpus_times), 3),
                "conversations_per_s": round(stats["conversations"] / statistics.median(corpus_times)),
                "conversations": stats["conversations"],
                "turns": stats["turns"],
                "kb_documents": stats["kb_documents"],
            }
        )
    )


if __name__ == "__main__":
    main()
