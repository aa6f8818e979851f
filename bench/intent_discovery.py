"""Intent discovery benchmark: csrl's discovery against the DSTC11 Track 2 organisers' baseline, as JSON.

On Banking77 (test split: 3,080 texts, 77 intents) and CLINC150 (in-scope test split: 4,500 texts, 150
intents), labels held back, both methods cluster the same embeddings of the shipped offline encoder
(all-MiniLM-L6-v2 via :class:`csrl.rewards.encoder.TextEncoder`) and choose k themselves in the same bounds:

- ``baseline``: k-means (scikit-learn, ``n_init=3``) on the embeddings, k chosen by the cosine silhouette
  over k = 10, 20, ..., 200 (the organisers tuned k in 5..50 with hyperopt, on all-mpnet-base-v2; the range
  here covers both datasets' true k);
- ``csrl``: :func:`csrl.rewards.discovery.discover_intents` as shipped, run on the same embeddings
  (:func:`~csrl.rewards.discovery.cluster_embeddings`, then naming), ``min_intents=2``, ``max_intents=200``.

Scores (:func:`csrl.rewards.discovery.cluster_metrics`, fractions; DSTC11 reports percentages): k found,
ACC, NMI, ARI, P, R, F1, and the seconds each method took after encoding (encoding is timed apart).
Published anchors (DSTC11 Track 2, its own banking test set, ACC): baseline 59.7, best team 75.2.

    python bench/intent_discovery.py                       # both datasets, seed 0
    python bench/intent_discovery.py --datasets banking77 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from csrl.rewards.discovery import cluster_embeddings, cluster_metrics, describe_clusters  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
BASELINE_KS = tuple(range(10, 201, 10))
ANCHORS = {"dstc11_t2_banking_test_ACC": {"organisers_baseline": 59.7, "best_team": 75.2}}


def banking77(folder: Path) -> tuple[list[str], list[str]]:
    """Banking77's test split: ``(texts, intents)``."""
    with gzip.open(folder / "banking77" / "test.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def clinc150(folder: Path) -> tuple[list[str], list[str]]:
    """CLINC150's in-scope test split (no out-of-scope queries): ``(texts, intents)``."""
    with gzip.open(folder / "clinc150" / "data_full.json.gz", "rt", encoding="utf-8") as handle:
        test = json.load(handle)["test"]
    return [text for text, _ in test], [intent for _, intent in test]


DATASETS = {"banking77": banking77, "clinc150": clinc150}


def scores(gold: list[str], labels, seconds: float) -> dict:
    """The metrics rounded for the report, with the time taken."""
    metrics = cluster_metrics(gold, list(labels))
    out = {"k": metrics["K"]} | {key: round(metrics[key], 4) for key in ("ACC", "NMI", "ARI", "P", "R", "F1")}
    return out | {"seconds": round(seconds, 1)}


def baseline(embeddings: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """K-means with k chosen by the cosine silhouette over ``BASELINE_KS`` (DSTC11 Track 2's baseline)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best = (-2.0, None, 0)
    for k in BASELINE_KS:
        labels = KMeans(k, n_init=3, random_state=seed).fit_predict(embeddings)
        silhouette = silhouette_score(embeddings, labels, metric="cosine")
        if silhouette > best[0]:
            best = (silhouette, labels, k)
    return best[1], best[2]


def run(name: str, texts: list[str], gold: list[str], encoder, args) -> dict:
    """Encode once, then time and score the baseline and csrl's discovery for each seed."""
    start = time.perf_counter()
    embeddings = encoder.encode(texts)
    result = {"texts": len(texts), "k_gold": len(set(gold)), "encode_seconds": round(time.perf_counter() - start, 1)}
    for seed in args.seeds:
        start = time.perf_counter()
        labels, _ = baseline(embeddings, seed)
        base = scores(gold, labels, time.perf_counter() - start)
        start = time.perf_counter()
        labels, _ = cluster_embeddings(embeddings, max_intents=args.max_intents, min_intents=2, seed=seed)
        intents = describe_clusters(texts, embeddings, labels)
        ours = scores(gold, labels, time.perf_counter() - start)
        tag = "" if len(args.seeds) == 1 else f"_seed{seed}"
        result |= {f"baseline{tag}": base, f"csrl{tag}": ours}
        if seed == args.seeds[0]:
            result["csrl_largest_intents"] = [f"{i['name']} ({i['size']}): {i['examples'][0]}" for i in intents[:5]]
        print(f"{name} seed {seed}: baseline {base}, csrl {ours}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, run the datasets, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding banking77/ and clinc150/")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--max-intents", type=int, default=200, help="upper bound on k for csrl (baseline: 200)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    from csrl.rewards.encoder import TextEncoder

    encoder = TextEncoder()
    result: dict = {"encoder": encoder.name, "precision": encoder.precision, "anchors": ANCHORS}
    for name in args.datasets:
        texts, gold = DATASETS[name](args.data)
        result[name] = run(name, texts, gold, encoder, args)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
