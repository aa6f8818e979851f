"""Readers for chat logs: canonical JSON Lines, CSV exports of turns in any shape, STAR, plain message lists.

Every reader validates each record and either raises :class:`InvalidDataError` listing every
problem with its file, line and field, or (``skip_invalid=True``) keeps the valid records and
reports the rest in :class:`LoadReport.problems`. Nothing is dropped without a trace: what a
reader leaves out by design (CSV rows of a role that is neither customer nor agent) is counted in
:attr:`SourceReport.ignored`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

from csrl.data.mapping import ColumnMapping, normalize_role, parse_timestamp, resolve_columns
from csrl.data.reading import (
    SourceReport,
    check_file,
    check_utf8,
    decoded_lines,
    format_of,
    raise_or_report,
    read_csv_rows,
    read_jsonl_records,
)
from csrl.data.report import InvalidDataError, LoadReport, Problem
from csrl.data.schema import Conversation, RecordError, Turn

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
MESSAGE_COLUMNS = ("id", "text")  # a list of customer messages: id optional (default: the line number)


def load_jsonl(path: str | Path, *, skip_invalid: bool = False) -> LoadReport:
    """Read conversations in the canonical schema, one JSON object a line (``.gz`` allowed).

    Args:
        path: the ``.jsonl`` file.
        skip_invalid: keep going past invalid records and report them instead of raising.

    Raises:
        InvalidDataError: invalid records and ``skip_invalid`` is off.

    """
    path = check_file(path)
    report = LoadReport(source=str(path))
    report.conversations.extend(read_jsonl_records(path, Conversation.from_dict, report.problems))
    return raise_or_report(report, skip_invalid)


def join_bursts(turns: list[Turn]) -> list[Turn]:
    r"""One turn for each run of a speaker's consecutive messages: texts joined by a newline.

    The first intent and the first rating given in the run are kept.

    >>> turns = [Turn("customer", "Hi"), Turn("customer", "my card is gone", rating=2),
    ...          Turn("agent", "Sorry!", intent="fraud"), Turn("agent", "Name?", intent="name")]
    >>> [(t.role, t.text, t.intent, t.rating) for t in join_bursts(turns)]
    [('customer', 'Hi\nmy card is gone', None, 2), ('agent', 'Sorry!\nName?', 'fraud', None)]
    """
    runs: list[list[Turn]] = []
    for turn in turns:
        if runs and runs[-1][0].role == turn.role and turn.role != "tool":
            runs[-1].append(turn)
        else:
            runs.append([turn])
    return [
        run[0]
        if len(run) == 1
        else Turn(
            role=run[0].role,
            text="\n".join(t.text for t in run),
            intent=next((t.intent for t in run if t.intent is not None), None),
            rating=next((t.rating for t in run if t.rating is not None), None),
        )
        for run in runs
    ]


def _csv_turn(role: str, values: dict[str, str], columns: dict[str, str]) -> Turn:
    """The turn of one row; errors name the file's own column."""
    record: dict = {"role": role, "text": values["text"]}
    try:
        if values.get("intent", "").strip():
            record["intent"] = values["intent"].strip()
        rating = values.get("rating", "").strip()
        if rating:
            try:
                record["rating"] = int(rating)
            except ValueError:
                raise RecordError("rating", f"expected an integer from 1 to 5, got {rating!r}") from None
        return Turn.from_dict(record)
    except RecordError as err:
        raise RecordError(columns.get(err.field, err.field), err.problem) from None


def _row_role(mapping: ColumnMapping, value: str, column: str) -> str | None:
    """``customer`` / ``agent``, ``None`` for a row to leave out, or an error for a role no row can have."""
    role = mapping.role_of(value)
    if role is None and normalize_role(value) == "tool":
        raise RecordError(column, "tool turns cannot be written in the CSV format: use JSON Lines")
    if role is None and not value.strip():
        raise RecordError(column, "empty (expected a customer or agent role)")
    return role


def load_csv(path: str | Path, *, skip_invalid: bool = False, mapping: ColumnMapping | None = None) -> SourceReport:
    """Read a CSV export of messages, one a row: ``conversation_id, role, text[, intent, rating, timestamp]``.

    ``mapping`` names the file's own columns and role values (default: the canonical column names
    and :data:`~csrl.data.mapping.DEFAULT_ROLES`). A conversation's rows keep their file order, or
    are sorted (stably) by the timestamp column where there is one. A speaker's consecutive
    messages make one turn (:func:`join_bursts`) unless ``mapping.merge_bursts`` is off. Rows of a
    role that is neither customer nor agent are left out and counted in ``ignored``.
    Conversations are returned in order of first appearance; line numbers count the header as line 1.

    Raises:
        InvalidDataError: invalid rows and ``skip_invalid`` is off. A bad row skips its whole conversation.
        ValueError: the header lacks a required column, or a mapped column is not in it.

    """
    path = check_file(path)
    mapping = mapping or ColumnMapping()
    report = SourceReport(source=str(path))
    reader = read_csv_rows(path)
    columns = mapping.resolve(reader.fieldnames, str(path))
    rows_of: dict[str, list[tuple[float, Turn]]] = {}
    first_line_of: dict[str, int] = {}
    bad_ids: set[str] = set()
    for row in reader:
        number = reader.line_num
        values = {canonical: row.get(column) or "" for canonical, column in columns.items()}
        conv_id = values["conversation_id"].strip()
        try:
            check_utf8({columns[c]: v for c, v in values.items()})
            if not conv_id:
                raise RecordError(columns["conversation_id"], "empty (expected non-empty text)")
            role = _row_role(mapping, values["role"], columns["role"])
            if role is None:
                message = f"{values['role'].strip()!r} is neither a customer nor an agent role (row skipped)"
                report.ignored.append(Problem(str(path), number, columns["role"], message))
                continue
            turn = _csv_turn(role, values, columns)
            moment = 0.0
            if "timestamp" in columns:
                if not values["timestamp"].strip():
                    raise RecordError(columns["timestamp"], "empty (expected ISO 8601 or Unix seconds)")
                try:
                    moment = parse_timestamp(values["timestamp"])
                except ValueError as err:
                    raise RecordError(columns["timestamp"], str(err)) from None
        except RecordError as err:
            # half a conversation would teach the wrong thing: the whole conversation is skipped
            skipped = f" (conversation {conv_id!r} skipped)" if conv_id else ""
            report.problems.append(Problem(str(path), number, err.field, err.problem + skipped))
            bad_ids.add(conv_id)
            continue
        rows_of.setdefault(conv_id, []).append((moment, turn))
        first_line_of.setdefault(conv_id, number)
    for conv_id, rows in rows_of.items():
        if conv_id in bad_ids:
            continue  # already reported with its bad row
        if "timestamp" in columns:
            rows = sorted(rows, key=lambda pair: pair[0])  # stable: equal times keep the file order
        turns = [turn for _, turn in rows]
        if mapping.merge_bursts:
            merged = join_bursts(turns)
            report.merged_messages += len(turns) - len(merged)
            turns = merged
        if not any(t.role == "agent" for t in turns):
            report.problems.append(
                Problem(str(path), first_line_of[conv_id], "turns", f"conversation {conv_id!r} has no agent turn")
            )
            continue
        report.conversations.append(Conversation(id=conv_id, turns=tuple(turns)))
    return raise_or_report(report, skip_invalid)


def load_conversations(
    source: str | Path, *, skip_invalid: bool = False, mapping: ColumnMapping | None = None
) -> LoadReport:
    """Load chat logs: ``"star"``, a ``.jsonl[.gz]`` / ``.csv[.gz]`` file, or a ``csrl data ingest`` folder.

    An ingested folder (:mod:`csrl.data.ingest`) was validated when it was written; its rows are read back as is.

    ``mapping`` (columns, role values, bursts) applies to CSV files only; see :func:`load_csv`.
    """
    from csrl.data.ingest import is_ingested, iter_conversations  # it reads logs through this module

    if is_ingested(source):
        if mapping is not None:
            raise ValueError(f"{source} was ingested already: its columns were mapped then; leave the mapping out")
        return LoadReport(source=str(source), conversations=list(iter_conversations(source)))
    if str(source) == "star" or format_of(Path(source)) in JSONL_SUFFIXES:
        if mapping is not None:
            raise ValueError(f"a column mapping applies to CSV logs only, not to {source}: leave it out")
    if str(source) == "star":
        from csrl.data.star import load_star

        return load_star()
    path = Path(source)
    kind = format_of(path)
    if kind in JSONL_SUFFIXES:
        return load_jsonl(path, skip_invalid=skip_invalid)
    if kind == ".csv":
        return load_csv(path, skip_invalid=skip_invalid, mapping=mapping)
    raise ValueError(f"cannot tell the format of {path}: expected 'star', a .jsonl file or a .csv file")


def _message_rows(path: Path, columns: Mapping[str, str]):
    """``(line, id, text)`` or ``(line, Problem)`` for each row of a CSV list of messages."""
    reader = read_csv_rows(path)
    header = ", ".join(n for n in reader.fieldnames or [] if n is not None) or "(empty)"
    found = resolve_columns(reader.fieldnames, columns, MESSAGE_COLUMNS, str(path))
    if "text" not in found:
        raise ValueError(
            f"{path}:1: CSV header lacks column text; expected [id,] text, got {header}; "
            "or map yours, e.g. --columns id=message_id,text=body"
        )
    for row in reader:
        number = reader.line_num
        values = {found[c]: row.get(found[c]) or "" for c in found}
        try:
            check_utf8(values)
        except RecordError as err:
            yield number, Problem(str(path), number, err.field, err.problem)
            continue
        message_id = values[found["id"]].strip() if "id" in found else str(number)
        if not message_id:
            yield number, Problem(str(path), number, found["id"], "empty (expected non-empty text)")
            continue
        yield number, message_id, values[found["text"]]


def _text_rows(path: Path):
    for number, text in decoded_lines(path):
        if isinstance(text, Problem):
            yield number, text
        elif text.removeprefix("\ufeff").strip():  # a byte-order mark is not a message
            yield number, str(number), text.removeprefix("\ufeff")


def load_messages(
    path: str | Path, *, columns: Mapping[str, str] | None = None, skip_invalid: bool = False
) -> tuple[list[str], list[str]]:
    """Customer messages for intent discovery: ``(ids, texts)`` from a CSV or a text file (``.gz`` allowed).

    A ``.csv`` has a ``text`` column and optionally an ``id`` column (``columns`` maps other names:
    ``{"id": "ticket_id", "text": "body"}``, see :func:`~csrl.data.mapping.parse_columns` with
    ``allowed=MESSAGE_COLUMNS``); without one, ids are line numbers. A ``.txt`` file holds one
    message a line, ids being line numbers; blank lines are skipped. Texts are stripped.

    Raises:
        InvalidDataError: bytes that are not UTF-8, empty texts or ids, duplicate ids, and ``skip_invalid``
            is off (with it, they are skipped and a warning counts them).
        ValueError: not a .csv or .txt file, a missing column, or no message at all.

    """
    path = check_file(path)
    kind = format_of(path)
    if kind == ".csv":
        rows = _message_rows(path, dict(columns or {}))
    elif kind == ".txt":
        if columns:
            raise ValueError(f"{path}: a column mapping applies to CSV files only, not to one message a line")
        rows = _text_rows(path)
    else:
        raise ValueError(f"cannot tell the format of {path}: expected a .csv (id, text) or a .txt (a message a line)")
    ids: list[str] = []
    texts: list[str] = []
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    text_field, id_field = ((columns or {}).get(c) or c for c in MESSAGE_COLUMNS[::-1])
    for number, *found in rows:
        if isinstance(found[0], Problem):
            problems.append(found[0])
            continue
        message_id, text = found[0], found[1].strip()
        if not text:
            problems.append(Problem(str(path), number, text_field, "empty (expected non-empty text)"))
        elif message_id in first_line_of:
            message = f"duplicate id {message_id!r} (first seen on line {first_line_of[message_id]})"
            problems.append(Problem(str(path), number, id_field, message))
        else:
            first_line_of[message_id] = number
            ids.append(message_id)
            texts.append(text)
    if problems and not skip_invalid:
        raise InvalidDataError(problems)
    if problems:
        warnings.warn(f"{path}: skipped {len(problems)} invalid message(s), first: {problems[0]}", stacklevel=2)
    if not texts:
        raise ValueError(f"{path}: holds no message")
    return ids, texts


def write_jsonl(records, path: str | Path) -> None:
    """Write objects with ``to_dict()`` as JSON Lines (UTF-8, non-ASCII kept readable)."""
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
