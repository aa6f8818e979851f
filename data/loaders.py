"""Readers for chat logs and knowledge bases: canonical JSON Lines, a flat CSV of turns, STAR.

Every reader validates each record and either raises :class:`InvalidDataError` listing every
problem with its file, line and field, or (``skip_invalid=True``) keeps the valid records and
reports the rest in :class:`LoadReport.problems`. Nothing is dropped without a trace.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from csrl.data.report import InvalidDataError, LoadReport, Problem
from csrl.data.schema import Conversation, KBDocument, RecordError, Turn

CSV_REQUIRED_COLUMNS = ("conversation_id", "role", "text")
CSV_OPTIONAL_COLUMNS = ("intent", "rating")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | Problem]]:
    """Yield ``(line_number, text)`` for non-blank lines, or a Problem for bytes that are not UTF-8."""
    with _open_binary(path) as raw:
        for number, data in enumerate(raw, start=1):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = data[err.start]
                yield (
                    number,
                    Problem(str(path), number, None, f"not valid UTF-8: byte 0x{bad:02x} at position {err.start}"),
                )
                continue
            if text.strip():
                yield number, text


def _parse_json_line(path: Path, number: int, text: str) -> dict | Problem:
    try:
        return json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        return Problem(str(path), number, None, f"not valid JSON: {err.msg} (column {err.colno})")


def _finish(report: LoadReport, skip_invalid: bool) -> LoadReport:
    if report.problems and not skip_invalid:
        raise InvalidDataError(report.problems)
    return report


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: pass a .jsonl or .csv file")
    return path


def load_jsonl(path: str | Path, *, skip_invalid: bool = False) -> LoadReport:
    """Read conversations in the canonical schema, one JSON object a line (``.gz`` allowed).

    Args:
        path: the ``.jsonl`` file.
        skip_invalid: keep going past invalid records and report them instead of raising.

    Raises:
        InvalidDataError: invalid records and ``skip_invalid`` is off.

    """
    path = _check_path(path)
    report = LoadReport(source=str(path))
    first_line_of: dict[str, int] = {}
    for number, text in _decoded_lines(path):
        record = text if isinstance(text, Problem) else _parse_json_line(path, number, text)
        if isinstance(record, Problem):
            report.problems.append(record)
            continue
        try:
            conversation = Conversation.from_dict(record)
        except RecordError as err:
            report.problems.append(Problem(str(path), number, err.field, err.problem))
            continue
        if conversation.id in first_line_of:
            message = f"duplicate id {conversation.id!r} (first seen on line {first_line_of[conversation.id]})"
            report.problems.append(Problem(str(path), number, "id", message))
            continue
        first_line_of[conversation.id] = number
        report.conversations.append(conversation)
    return _finish(report, skip_invalid)


def _csv_turn(row: dict, where: str) -> Turn:
    record: dict = {"role": row["role"].strip(), "text": row["text"]}
    if record["role"] == "tool":
        raise RecordError(where + "role", "tool turns cannot be written in the CSV format: use JSON Lines")
    if row.get("intent"):
        record["intent"] = row["intent"].strip()
    if row.get("rating", "").strip():
        try:
            record["rating"] = int(row["rating"])
        except ValueError:
            raise RecordError(where + "rating", f"expected an integer from 1 to 5, got {row['rating']!r}") from None
    return Turn.from_dict(record)


def load_csv(path: str | Path, *, skip_invalid: bool = False) -> LoadReport:
    """Read a flat CSV of turns: ``conversation_id, role, text[, intent, rating]``, one turn a row.

    Rows of a conversation keep their file order; conversations are returned in order of first
    appearance. Line numbers in problems count the header as line 1.

    Raises:
        InvalidDataError: invalid rows and ``skip_invalid`` is off.
        ValueError: the header lacks a required column.

    """
    path = _check_path(path)
    report = LoadReport(source=str(path))
    with _open_binary(path) as raw:
        # surrogateescape keeps undecodable bytes visible so each bad row is reported on its own line
        content = raw.read().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(content, newline=""))
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(
            f"{path}:1: CSV header lacks column(s) {', '.join(missing)}; expected "
            f"{', '.join(CSV_REQUIRED_COLUMNS)}[, {', '.join(CSV_OPTIONAL_COLUMNS)}]"
        )
    turns_of: dict[str, list[Turn]] = {}
    first_line_of: dict[str, int] = {}
    bad_ids: set[str] = set()
    for row in reader:
        number = reader.line_num
        conv_id = (row.get("conversation_id") or "").strip()
        try:
            _check_utf8(row)
            if not conv_id:
                raise RecordError("conversation_id", "empty (expected non-empty text)")
            turn = _csv_turn({k: v or "" for k, v in row.items() if k is not None}, "")
        except RecordError as err:
            # half a conversation would teach the wrong thing: the whole conversation is skipped
            skipped = f" (conversation {conv_id!r} skipped)" if conv_id else ""
            report.problems.append(Problem(str(path), number, err.field, err.problem + skipped))
            bad_ids.add(conv_id)
            continue
        turns_of.setdefault(conv_id, []).append(turn)
        first_line_of.setdefault(conv_id, number)
    for conv_id, turns in turns_of.items():
        if conv_id in bad_ids:
            continue  # already reported with its bad row
        if not any(t.role == "agent" for t in turns):
            report.problems.append(
                Problem(str(path), first_line_of[conv_id], "turns", f"conversation {conv_id!r} has no agent turn")
            )
            continue
        report.conversations.append(Conversation(id=conv_id, turns=tuple(turns)))
    return _finish(report, skip_invalid)


def _check_utf8(row: dict) -> None:
    """Raise for a CSV row that held bytes that are not UTF-8 (decoded as lone surrogates)."""
    for column, value in row.items():
        if not isinstance(value, str):
            continue
        for position, char in enumerate(value):
            if "\udc80" <= char <= "\udcff":
                raise RecordError(
                    str(column), f"not valid UTF-8: byte 0x{ord(char) - 0xDC00:02x} at position {position}"
                )


def load_conversations(source: str | Path, *, skip_invalid: bool = False) -> LoadReport:
    """Load chat logs from ``"star"`` (the embedded corpus), a ``.jsonl[.gz]`` or a ``.csv[.gz]`` file."""
    if str(source) == "star":
        from csrl.data.star import load_star

        return load_star()
    path = Path(source)
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".json", ".ndjson"):
        return load_jsonl(path, skip_invalid=skip_invalid)
    if kind == ".csv":
        return load_csv(path, skip_invalid=skip_invalid)
    raise ValueError(f"cannot tell the format of {path}: expected 'star', a .jsonl file or a .csv file")


def read_knowledge_base(path: str | Path) -> LoadReport:
    """Read KB documents ``{"id", "text", "title"?, "intent"?}``, one JSON object a line.

    Invalid and duplicate documents are reported in ``problems``, never raised.
    """
    path = _check_path(path)
    report = LoadReport(source=str(path))
    seen: dict[str, int] = {}
    for number, text in _decoded_lines(path):
        record = text if isinstance(text, Problem) else _parse_json_line(path, number, text)
        if isinstance(record, Problem):
            report.problems.append(record)
            continue
        try:
            doc = KBDocument.from_dict(record)
        except RecordError as err:
            report.problems.append(Problem(str(path), number, err.field, err.problem))
            continue
        if doc.id in seen:
            message = f"duplicate id {doc.id!r} (first seen on line {seen[doc.id]})"
            report.problems.append(Problem(str(path), number, "id", message))
            continue
        seen[doc.id] = number
        report.documents.append(doc)
    return report


def load_knowledge_base(path: str | Path, *, skip_invalid: bool = False) -> list[KBDocument]:
    """The valid documents of a JSON Lines knowledge base (see :func:`read_knowledge_base`).

    Raises:
        InvalidDataError: invalid or duplicate documents and ``skip_invalid`` is off.
        ValueError: the file holds no valid document at all.

    """
    report = _finish(read_knowledge_base(path), skip_invalid)
    if not report.documents:
        raise ValueError(f"{path}: the knowledge base holds no valid document")
    return report.documents


def write_jsonl(records, path: str | Path) -> None:
    """Write objects with ``to_dict()`` as JSON Lines (UTF-8, non-ASCII kept readable)."""
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
