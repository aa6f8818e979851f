"""Banking77 intent benchmark for the intent classifier: train on train, report test accuracy and macro-F1 as JSON.

Two modes:

- ``head`` (default, what the reward uses): the shared frozen all-MiniLM-L6-v2 embeddings
  (:class:`csrl.rewards.encoder.TextEncoder`) through :func:`csrl.rewards.intent.train_intent_classifier`
  (linear: a logistic regression with C=10; ``--hidden N``: an AdamW-trained MLP), beside, in the same run
  and on the same embeddings, the plain probe: scikit-learn's ``LogisticRegression()`` with its defaults;
- ``finetune``: the MiniLM encoder itself fine-tuned as a ``BertForSequenceClassification``
  (22.7M parameters), saved with ``save_pretrained`` (safetensors) when ``--out`` is given.

Anchor: BERT-large 93.66% test accuracy (Casanueva et al. 2020). Data: ``../shared/data/banking77``
(CC BY 4.0; 10,003 train / 3,080 test, 77 intents).

    python bench/banking77.py                              # frozen embeddings + linear head, and the plain probe
    python bench/banking77.py --mode finetune --epochs 3   # fine-tune the encoder (slow on 2 cores)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from csrl.rewards.intent import IntentTrainConfig, train_intent_classifier  # noqa: E402
from csrl.rewards.metrics import macro_f1  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"


def read_split(folder: Path, split: str) -> tuple[list[str], list[str]]:
    """``(texts, categories)`` of ``{split}.csv.gz`` (header ``text,category``)."""
    path = folder / f"{split}.csv.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --data FOLDER holding train.csv.gz and test.csv.gz")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def run_head(train, test, args) -> dict:
    """Frozen shared-encoder embeddings + the intent head."""
    from csrl.rewards.encoder import TextEncoder

    start = time.perf_counter()
    encoder = TextEncoder()
    config = IntentTrainConfig(
        epochs=args.epochs or 60, lr=args.lr or 2e-3, max_examples=20_000, seed=args.seed, hidden=args.hidden
    )
    classifier = train_intent_classifier(train[0], train[1], encoder, config)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    predicted = classifier.predict(test[0])
    result = {"train_seconds": round(train_s, 1), "predict_seconds": round(time.perf_counter() - start, 1)}
    result |= metrics(test[1], predicted)
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    probe = LogisticRegression(max_iter=2000).fit(encoder.encode(train[0]), train[1])
    baseline = metrics(test[1], probe.predict(encoder.encode(test[0])).tolist())
    result["baseline_logistic_regression"] = baseline | {"seconds": round(time.perf_counter() - start, 1)}
    result["accuracy_ratio_to_baseline"] = round(result["accuracy"] / baseline["accuracy"], 4)
    return result


def run_finetune(train, test, args) -> dict:
    """Fine-tune all-MiniLM-L6-v2 end to end as a sequence classifier."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from csrl.rewards.encoder import DEFAULT_ENCODER, resolve_encoder_path

    torch.manual_seed(args.seed)
    labels = sorted(set(train[1]))
    index = {label: i for i, label in enumerate(labels)}
    path = resolve_encoder_path(DEFAULT_ENCODER)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    texts, gold = train
    if args.max_train and len(texts) > args.max_train:
        texts, gold = texts[: args.max_train], gold[: args.max_train]
    y = torch.tensor([index[g] for g in gold])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr or 1e-4, weight_decay=0.01)
    epochs = args.epochs or 3
    steps = epochs * ((len(texts) + args.batch_size - 1) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=generator)
        for n, begin in enumerate(range(0, len(texts), args.batch_size)):
            mb = order[begin : begin + args.batch_size]
            batch = tokenizer([texts[i] for i in mb], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out = model(**batch.to(device), labels=y[mb].to(device))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            scheduler.step()
            if n % 50 == 0:
                print(
                    f"epoch {epoch} step {n} loss {out.loss.item():.3f} {time.perf_counter() - start:.0f}s",
                    file=sys.stderr,
                )
    train_s = time.perf_counter() - start
    model.eval()
    predicted = []
    with torch.no_grad():
        for begin in range(0, len(test[0]), 128):
            batch = tokenizer(
                test[0][begin : begin + 128], padding=True, truncation=True, max_length=64, return_tensors="pt"
            )
            predicted.extend(labels[i] for i in model(**batch.to(device)).logits.argmax(-1).tolist())
    if args.out:
        model.save_pretrained(args.out, safe_serialization=True)
        tokenizer.save_pretrained(args.out)
    return {"train_seconds": round(train_s, 1), "train_examples": len(texts), "epochs": epochs} | metrics(
        test[1], predicted
    )


def metrics(gold: list[str], predicted: list[str]) -> dict:
    """Accuracy, macro-F1 and n."""
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    return {"accuracy": round(accuracy, 4), "macro_f1": round(macro_f1(gold, predicted), 4), "n": len(gold)}


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, train, evaluate, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.csv.gz and test.csv.gz")
    parser.add_argument("--mode", choices=("head", "finetune"), default="head")
    parser.add_argument("--epochs", type=int, default=None, help="default: 60 (head), 3 (finetune)")
    parser.add_argument("--lr", type=float, default=None, help="default: 2e-3 (head), 1e-4 (finetune)")
    parser.add_argument("--hidden", type=int, default=0, help="head hidden width (0 = linear, what the reward uses)")
    parser.add_argument("--batch-size", type=int, default=32, help="finetune batch size")
    parser.add_argument("--max-train", type=int, default=None, help="finetune on the first N train examples only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="finetune: save the model here (safetensors)")
    args = parser.parse_args(argv)
    train, test = read_split(args.data, "train"), read_split(args.data, "test")
    result = {"mode": args.mode} | (run_head if args.mode == "head" else run_finetune)(train, test, args)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
