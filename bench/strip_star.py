"""Logs as most users have them: STAR (and optionally Bitext) stripped to text-only CSVs, labels held back.

Writes ``conversation_id,role,text`` (customer and agent turns only: no tool turns, intents, outcomes
or knowledge base) and, beside it, the held-back labels for judging intent discovery
(``conversation_id,intent``). ``--bitext PATH`` does the same for the Bitext customer-support
sample (``../shared/data/bitext_customer_support``, CDLA-Sharing 1.0, synthetic, single-turn): one
conversation per source row, the customer's instruction then the agent's response, labels
(``conversation_id,intent,category``) held back. Each written CSV is read back with
:func:`csrl.data.load_csv` and the counts are printed as JSON.

``--help-centre DIR`` writes ABCD's agent guidelines (``../shared/data/abcd/guidelines.json``, MIT, its LICENSE
copied beside) as a help-centre export: a Markdown page per flow, ``##`` per subflow, ``###`` per action, for
``csrl train --kb DIR``. Bitext's intents overlap ABCD's flows (refunds, orders, accounts, shipping).

``--ratings`` adds a ``rating`` column, as a post-chat survey would fill it: the customer's last message of each
conversation carries a 1-5 rating made from STAR's dialogue-level signals (1: the user said the assistant was not
calm and helpful; 2: the dialogue ended before the task was complete; 5: otherwise). Those are the rated logs
that ``satisfaction.auc_rated`` is measured on.

    python bench/strip_star.py                        # /tmp/star_text.csv + /tmp/star_text.intents.csv
    python bench/strip_star.py /tmp/star.csv --bitext /tmp/bitext.csv
    python bench/strip_star.py /tmp/star_rated.csv --ratings
    python bench/strip_star.py --bitext /tmp/bitext.csv --help-centre /tmp/help-centre
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from collections import Counter
from pathlib import Path

from csrl.data import load_csv, load_star

ROOT = Path(__file__).resolve().parents[1]
BITEXT = ROOT.parent / "shared/data/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv.gz"
GUIDELINES = ROOT.parent / "shared/data/abcd/guidelines.json"


def labels_path(path: Path) -> Path:
    """Where the held-back labels of ``path`` go: ``x.csv`` -> ``x.intents.csv``."""
    return path.with_name(path.name.removesuffix(".csv") + ".intents.csv")


def _write_csv(path: Path, header: list[str], rows) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def _read_back(path: Path) -> dict:
    report = load_csv(path)
    return {
        "conversations": len(report.conversations),
        "turns": sum(len(c.turns) for c in report.conversations),
        "merged_messages": report.merged_messages,
        "ignored_rows": len(report.ignored),
    }


def survey_rating(outcome) -> int:
    """A 1-5 post-chat rating from STAR's dialogue-level outcome (see the module docstring)."""
    if outcome is not None and outcome.satisfied is False:
        return 1
    if outcome is not None and not outcome.completed:
        return 2
    return 5


def _star_rows(conversation, ratings: bool) -> list[tuple]:
    rows = [(conversation.id, t.role, t.text) for t in conversation.turns if t.role in ("customer", "agent")]
    if not ratings:
        return rows
    last_customer = max((i for i, row in enumerate(rows) if row[1] == "customer"), default=None)
    rating = survey_rating(conversation.outcome)
    return [row + ((rating,) if i == last_customer else ("",)) for i, row in enumerate(rows)]


def strip_star(out: Path, ratings: bool = False) -> dict:
    """Write STAR's customer and agent text to ``out`` and its conversation intents beside it."""
    conversations = load_star().conversations
    rows = [row for c in conversations for row in _star_rows(c, ratings)]
    _write_csv(out, ["conversation_id", "role", "text"] + (["rating"] if ratings else []), rows)
    intents = [(c.id, c.intent) for c in conversations if c.intent]
    _write_csv(labels_path(out), ["conversation_id", "intent"], intents)
    return {
        "csv": str(out),
        "labels": str(labels_path(out)),
        "conversations": len(conversations),
        "rows": len(rows),
        "rows_by_role": dict(Counter(row[1] for row in rows)),
        "intents": len({intent for _, intent in intents}),
        "ratings": dict(sorted(Counter(row[3] for row in rows if row[3] != "").items())) if ratings else None,
        "read_back": _read_back(out),
    }


def strip_bitext(out: Path, source: Path = BITEXT) -> dict:
    """Write Bitext's instruction / response pairs as two-turn conversations; intent and category held back."""
    if not source.exists():
        raise FileNotFoundError(f"Bitext sample not found at {source}: pass --bitext-source PATH")
    with gzip.open(source, "rt", encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    turns, labels = [], []
    for number, record in enumerate(records, start=1):
        conv_id = f"bitext-{number}"
        turns += [(conv_id, "customer", record["instruction"]), (conv_id, "agent", record["response"])]
        labels.append((conv_id, record["intent"], record["category"]))
    _write_csv(out, ["conversation_id", "role", "text"], turns)
    _write_csv(labels_path(out), ["conversation_id", "intent", "category"], labels)
    return {
        "csv": str(out),
        "labels": str(labels_path(out)),
        "conversations": len(records),
        "rows": len(turns),
        "intents": len({intent for _, intent, _ in labels}),
        "categories": len({category for _, _, category in labels}),
        "read_back": _read_back(out),
    }


def write_help_centre(folder: Path, source: Path = GUIDELINES) -> dict:
    """ABCD's agent guidelines as a folder of Markdown pages (one per flow); returns the guidelines read."""
    guidelines = json.loads(source.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    for flow, spec in guidelines.items():
        lines = [f"# {flow}", "", spec["description"], ""]
        for subflow, body in spec["subflows"].items():
            lines += [f"## {subflow}", "", *body["instructions"], ""]
            for action in body["actions"]:
                lines += [f"### {action['button']}", "", action["text"], "", *[f"- {s}" for s in action["subtext"]], ""]
        (folder / (flow.lower().replace(" ", "-") + ".md")).write_text("\n".join(lines), encoding="utf-8")
    (folder / "LICENSE-abcd").write_text((source.parent / "LICENSE").read_text(encoding="utf-8"), encoding="utf-8")
    return guidelines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/star_text.csv", type=Path, help="the STAR text-only CSV")
    parser.add_argument("--bitext", type=Path, help="also write the Bitext sample as a text-only CSV here")
    parser.add_argument("--bitext-source", type=Path, default=BITEXT, help="the Bitext .csv.gz")
    parser.add_argument("--ratings", action="store_true", help="rate each conversation's last customer message")
    parser.add_argument("--help-centre", type=Path, help="write ABCD's guidelines as Markdown pages to this folder")
    args = parser.parse_args()
    summary = {"star": strip_star(args.out, args.ratings)}
    if args.bitext:
        summary["bitext"] = strip_bitext(args.bitext, args.bitext_source)
    if args.help_centre:
        pages = write_help_centre(args.help_centre)
        summary["help_centre"] = {"folder": str(args.help_centre), "pages": len(pages)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
