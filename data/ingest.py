"""Chat logs on disk as an Arrow dataset: validated and written once, then read memory-mapped, a row at a time.

``csrl data ingest logs.jsonl --out logs.arrow`` streams the logs through the canonical schema's validation
into ``logs.arrow/conversations.arrow`` (Arrow IPC stream, the ``datasets`` format; one row a conversation, its
turns and their search results nested) in batches, so memory stays flat however long the logs are. Splits are
given as :func:`~csrl.data.load_corpus` gives them (by id and seed), so an ingested folder and its source agree.

Read it back with :func:`open_ingested` (a memory-mapped ``datasets.Dataset``), :func:`iter_conversations`
(:class:`~csrl.data.schema.Conversation` objects, one at a time) or ``load_corpus("logs.arrow")``.

JSON Lines logs stream; a CSV export is grouped into conversations in memory first (its rows of one
conversation may be anywhere in the file).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from csrl.data.loaders import JSONL_SUFFIXES, load_conversations
from csrl.data.mapping import ColumnMapping
from csrl.data.reading import check_file, format_of, read_jsonl_records
from csrl.data.report import InvalidDataError, Problem
from csrl.data.schema import Conversation, KBDocument, Outcome, Turn
from csrl.data.splits import split_of

CONVERSATIONS_FILE = "conversations.arrow"
SUMMARY_FILE = "ingest.json"


def features():
    """The ``datasets.Features`` of a conversation row (``None`` where a field is unset)."""
    from datasets import Features, List, Value

    document = {"id": Value("string"), "title": Value("string"), "text": Value("string"), "intent": Value("string")}
    turn = {
        "role": Value("string"),
        "text": Value("string"),
        "intent": Value("string"),
        "rating": Value("int32"),
        "query": Value("string"),
        "results": List(document),
    }
    return Features(
        {
            "id": Value("string"),
            "split": Value("string"),
            "intent": Value("string"),
            "satisfied": Value("bool"),
            "completed": Value("bool"),
            "turns": List(turn),
        }
    )


def conversation_row(conversation: Conversation) -> dict:
    """A conversation as one row of :func:`features`."""
    outcome = conversation.outcome or Outcome()
    return {
        "id": conversation.id,
        "split": conversation.split,
        "intent": conversation.intent,
        "satisfied": outcome.satisfied,
        "completed": outcome.completed,
        "turns": [
            {"role": t.role, "text": t.text, "intent": t.intent, "rating": t.rating, "query": t.query,
             "results": [{"id": d.id, "title": d.title, "text": d.text, "intent": d.intent} for d in t.results]}
            for t in conversation.turns
        ],
    }  # fmt: skip


def row_conversation(row: dict) -> Conversation:
    """The :class:`Conversation` of a row (validated when it was ingested, so built directly)."""
    outcome = None
    if row["satisfied"] is not None or row["completed"] is not None:
        outcome = Outcome(satisfied=row["satisfied"], completed=row["completed"])
    turns = tuple(
        Turn(role=t["role"], text=t["text"] or "", intent=t["intent"], rating=t["rating"], query=t["query"],
             results=tuple(KBDocument(id=d["id"], text=d["text"], title=d["title"] or "", intent=d["intent"])
                           for d in t["results"]))
        for t in row["turns"]
    )  # fmt: skip
    return Conversation(id=row["id"], turns=turns, intent=row["intent"], split=row["split"], outcome=outcome)


@dataclass
class IngestReport:
    """What :func:`ingest` wrote: counts, the problems of skipped records, and how long it took."""

    source: str
    out: str
    conversations: int = 0
    turns: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form written to ``ingest.json``."""
        return {"source": self.source, "out": self.out, "conversations": self.conversations, "turns": self.turns,
                "seconds": round(self.seconds, 2), "skipped_records": len(self.problems)}  # fmt: skip


def stream_conversations(source: str | Path, problems: list[Problem], mapping: ColumnMapping | None = None):
    """The conversations of ``source`` one at a time (JSON Lines streams; STAR and CSV are read whole first).

    Invalid records are appended to ``problems`` and left out.
    """
    if str(source) != "star" and format_of(check_file(source)) in JSONL_SUFFIXES:
        if mapping is not None:
            raise ValueError(f"a column mapping applies to CSV logs only, not to {source}: leave it out")
        yield from read_jsonl_records(Path(source), Conversation.from_dict, problems)
        return
    report = load_conversations(source, skip_invalid=True, mapping=mapping)
    problems.extend(report.problems)
    yield from report.conversations


def ingest(
    source: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    mapping: ColumnMapping | None = None,
    skip_invalid: bool = False,
    batch_size: int = 1_000,
) -> IngestReport:
    """Validate ``source``'s conversations and write them to the Arrow folder ``out``, ``batch_size`` at a time.

    Args:
        source: ``"star"``, a ``.jsonl[.gz]`` or a ``.csv[.gz]`` file of logs.
        out: the folder to write (must not exist: nothing is overwritten).
        seed: the split seed (conversations without a logged split get :func:`~csrl.data.splits.split_of`'s).
        mapping: a CSV export's columns and role values.
        skip_invalid: leave invalid records out (counted in the report) instead of failing.
        batch_size: conversations held in memory before they are written.

    Raises:
        FileExistsError: ``out`` exists.
        InvalidDataError: invalid records and not ``skip_invalid``; ``out`` is not written.
    """
    import pyarrow as pa

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: choose another --out (an ingested folder is never overwritten)")
    started = time.perf_counter()
    report = IngestReport(source=str(source), out=str(out))
    schema = features().arrow_schema
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with pa.OSFile(str(partial / CONVERSATIONS_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            rows: list[dict] = []
            for conversation in stream_conversations(source, report.problems, mapping):
                split = conversation.split or split_of(conversation.id, seed)
                rows.append({**conversation_row(conversation), "split": split})
                report.conversations += 1
                report.turns += len(conversation.turns)
                if len(rows) == batch_size:
                    writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
                    rows = []
            if rows:
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
        if report.problems and not skip_invalid:
            raise InvalidDataError(report.problems)
        if report.conversations == 0:
            raise ValueError(f"{source}: no valid conversation to ingest")
        report.seconds = time.perf_counter() - started
        (partial / SUMMARY_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def is_ingested(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`ingest`."""
    return (Path(path) / CONVERSATIONS_FILE).is_file()


def _conversations_file(path: str | Path) -> Path:
    if not is_ingested(path):
        raise FileNotFoundError(f"{path} is not an ingested folder: expected {CONVERSATIONS_FILE} (csrl data ingest)")
    return Path(path) / CONVERSATIONS_FILE


def open_ingested(path: str | Path):
    """The ingested conversations as a memory-mapped ``datasets.Dataset`` (rows are read from disk on demand)."""
    from datasets import Dataset

    return Dataset.from_file(str(_conversations_file(path)))


def iter_conversations(path: str | Path) -> Iterator[Conversation]:
    """The ingested conversations one at a time, read a written batch at a time.

    The file is read as a stream, not memory-mapped: a pass over the logs keeps one batch resident, where a
    memory map would count every page it touched as this process's memory.
    """
    import pyarrow as pa

    with pa.OSFile(str(_conversations_file(path)), "rb") as source:
        for batch in pa.ipc.open_stream(source):
            for row in batch.to_pylist():
                yield row_conversation(row)


__all__ = [
    "CONVERSATIONS_FILE",
    "IngestReport",
    "conversation_row",
    "features",
    "ingest",
    "is_ingested",
    "iter_conversations",
    "open_ingested",
    "row_conversation",
    "stream_conversations",
]
