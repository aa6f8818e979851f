"""Logs at scale: ingest time and peak memory at 10k / 100k / 1M conversations, against reading the logs whole.

The logs are synthetic, made of STAR's: conversation i has the turns of STAR conversation i mod 6,028 (tool turns
and their results included) with each customer message replaced by one drawn at random from all of STAR's, and
the id ``syn-i``; written as JSON Lines (gzip level 1). Every measurement runs in a fresh process whose peak
resident memory comes from the kernel (``os.wait4``):

- ``ingest``: what ``csrl data ingest`` runs, into an Arrow folder (validation included);
- ``stream``: every ingested conversation read back as objects, one at a time (:func:`iter_conversations`);
- ``load_whole``: ``load_corpus`` on the JSON Lines file, every conversation in memory at once (today's way of
  reading logs; only up to ``--whole-up-to`` conversations);
- ``stages`` (up to ``--stages-up-to`` conversations): the training stages ``csrl train --preset quick`` runs before
  SFT, each timed, on the *text-only* version of the same logs (no intent labels, no tool turns: what most companies
  have, and what makes every stage work): intent discovery, the knowledge base built from the agents' answers, the
  reward models (BM25 + FAISS index, calibration, intent and satisfaction heads, held-out evaluation) and the SFT
  examples.

    .venv/bin/python bench/scale.py [--sizes 10000,100000,1000000] [--work runs/bench/scale]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from csrl.data import load_corpus

INGEST = """
import sys
from csrl.data.ingest import ingest
report = ingest(sys.argv[1], sys.argv[2])
print(report.conversations, report.turns)
"""
STREAM = """
import sys
from csrl.data.ingest import iter_conversations
print(sum(len(c.turns) for c in iter_conversations(sys.argv[1])))
"""
LOAD_WHOLE = """
import sys
from csrl.data import load_corpus
print(sum(len(c.turns) for c in load_corpus(sys.argv[1]).conversations))
"""
STAGES = """
import json, sys, time
from pathlib import Path
from csrl.data import Corpus, load_corpus
from csrl.dialogue.models.prompts import corpus_to_examples
from csrl.dialogue.pipeline.config import TrainConfig
from csrl.dialogue.pipeline.inference import infer_intents, infer_knowledge_base
from csrl.rewards.stack import build_reward_stack, reward_encoder

config, seconds = TrainConfig.from_preset("quick"), {}
began = time.perf_counter()
corpus = load_corpus(sys.argv[1])
seconds["load"] = time.perf_counter() - began
encoder = reward_encoder(config.reward)
began = time.perf_counter()
conversations, intents, _ = infer_intents(corpus, encoder, intents_file=None,
                                          max_intents=config.data.max_discovered_intents, seed=0)
corpus = Corpus(conversations, corpus.knowledge_base, corpus.report)
seconds["discovery"] = time.perf_counter() - began
began = time.perf_counter()
documents, _ = infer_knowledge_base(corpus, encoder, given="")
corpus = Corpus(conversations, documents, corpus.report)
seconds["knowledge_base"] = time.perf_counter() - began
began = time.perf_counter()
build_reward_stack(corpus, Path(sys.argv[2]), config.reward, config.reward_training, encoder=encoder, log=lambda *_: 0)
seconds["reward_models"] = time.perf_counter() - began
began = time.perf_counter()
examples = corpus_to_examples(corpus.split("train"), split="train",
                              results_char_budget=config.policy.results_char_budget)
seconds["sft_examples"] = time.perf_counter() - began
counts = {"intents": len(intents), "kb_documents": len(documents), "sft_examples": len(examples)}
print(json.dumps({"stage_s": {k: round(v, 1) for k, v in seconds.items()}, **counts}))
"""


def write_synthetic(path: Path, count: int, seed: int = 0, *, text_only: bool = False) -> float:
    """``count`` synthetic conversations from STAR's turns into ``path`` (JSON Lines, gzip); returns MB written.

    ``text_only`` drops what chat logs seldom have: the intent labels and the tool turns.
    """
    star = load_corpus("star").conversations
    customer = [t.text for c in star for t in c.turns if t.role == "customer"]
    templates = [{k: v for k, v in c.to_dict().items() if k != "split"} for c in star]
    rng = np.random.default_rng(seed)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        for i in range(count):
            template = templates[i % len(templates)]
            draws = iter(rng.integers(len(customer), size=len(template["turns"])).tolist())
            turns = [{**t, "text": customer[next(draws)]} if t["role"] == "customer" else t for t in template["turns"]]
            record = {**template, "id": f"syn-{i}", "turns": turns}
            if text_only:
                record = {"id": record["id"], "turns": [strip_labels(t) for t in turns if t["role"] != "tool"]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path.stat().st_size / 1e6


def strip_labels(turn: dict) -> dict:
    """A turn as a text-only log has it: role and text (the customer's rating kept: the satisfaction stage's signal)."""
    return {k: v for k, v in turn.items() if k in ("role", "text", "rating")}


def measured(command: list[str]) -> dict:
    """Run ``command`` in a fresh process: its wall seconds, peak resident MB and last line of output."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    out, err = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    last_line = (out.strip().splitlines() or [""])[-1]
    return {"seconds": round(seconds, 1), "peak_mb": round(usage.ru_maxrss / 1024), "output": last_line[-1000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated conversation counts")
    parser.add_argument("--whole-up-to", type=int, default=100_000, help="largest size also read whole")
    parser.add_argument("--stages-up-to", type=int, default=100_000, help="largest size whose stages are timed")
    parser.add_argument("--work", default="runs/bench/scale", help="folder for the logs and ingested folders")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"logs": "synthetic, from STAR's turns", "sizes": {}}
    for size in [int(s) for s in args.sizes.split(",")]:
        logs, folder = work / f"logs_{size}.jsonl.gz", work / f"logs_{size}.arrow"
        began = time.perf_counter()
        row = {"logs_mb": round(write_synthetic(logs, size), 1), "generate_s": round(time.perf_counter() - began, 1)}
        shutil.rmtree(folder, ignore_errors=True)
        row["ingest"] = measured([sys.executable, "-c", INGEST, str(logs), str(folder)])
        row["arrow_mb"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 1)
        row["stream"] = measured([sys.executable, "-c", STREAM, str(folder)])
        if size <= args.whole_up_to:
            row["load_whole"] = measured([sys.executable, "-c", LOAD_WHOLE, str(logs)])
        if size <= args.stages_up_to:
            text_only, stages = work / f"text_only_{size}.jsonl.gz", work / f"stages_{size}"
            write_synthetic(text_only, size, text_only=True)
            shutil.rmtree(stages, ignore_errors=True)
            row["stages"] = measured([sys.executable, "-c", STAGES, str(text_only), str(stages)])
            row["stages"].update(json.loads(row["stages"].pop("output").splitlines()[-1]))
        report["sizes"][str(size)] = row
        print(json.dumps({size: row}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
