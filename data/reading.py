"""What every reader of user files shares: opening (``.gz`` too), UTF-8 checks, and the report of a source.

A user's export is read as bytes and decoded as UTF-8 here, so a bad byte becomes a reported
problem on its own line instead of a crash somewhere later. :class:`SourceReport` adds to a
:class:`LoadReport` what a reader left out *by design* (rows of a role that is neither customer
nor agent, empty help-centre files): counted and placed, never an error and never silent.

>>> report = SourceReport(source="logs.csv")
>>> report.ignored += [Problem("logs.csv", 4, "role", "'system' is neither a customer nor an agent role (row skipped)"),
...                    Problem("logs.csv", 9, "role", "'system' is neither a customer nor an agent role (row skipped)")]
>>> report.ignored_reasons()
{"role: 'system' is neither a customer nor an agent role": 2}
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from csrl.data.report import InvalidDataError, LoadReport, Problem
from csrl.data.schema import RecordError


@dataclass
class SourceReport(LoadReport):
    """A :class:`LoadReport` that also says what was left out on purpose and how many messages were merged.

    Attributes:
        ignored: rows or files skipped by design, each with its place (not errors: ``skip_invalid`` plays no part).
        merged_messages: messages folded into the turn before them (a speaker's burst made one turn).

    """

    ignored: list[Problem] = field(default_factory=list)
    merged_messages: int = 0

    def ignored_reasons(self) -> dict[str, int]:
        """How many rows or files were left out for each reason (values kept: they say what to map)."""
        reasons = Counter(
            (f"{p.field}: " if p.field else "") + re.sub(r" \(.*\)$", "", p.message) for p in self.ignored
        )
        return dict(reasons.most_common())


def check_file(path: str | Path, *, allow_dir: bool = False) -> Path:
    """``path`` as a :class:`Path` that exists; a folder only where ``allow_dir``.

    Raises:
        FileNotFoundError: nothing is there.
        IsADirectoryError: a folder where a file was expected.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir() and not allow_dir:
        raise IsADirectoryError(f"{path} is a directory: pass a .jsonl or .csv file")
    return path


def open_binary(path: Path):
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def format_of(path: Path) -> str:
    """The suffix that names the format, past a ``.gz``: ``logs.csv.gz`` -> ``.csv``.

    >>> format_of(Path("logs.CSV.gz")), format_of(Path("kb.jsonl")), format_of(Path("README"))
    ('.csv', '.jsonl', '')
    """
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes else ""


def utf8_problem(path: Path, number: int, data: bytes, err: UnicodeDecodeError) -> Problem:
    """The problem for line ``number`` whose ``data`` is not UTF-8, naming the first bad byte."""
    return Problem(str(path), number, None, f"not valid UTF-8: byte 0x{data[err.start]:02x} at position {err.start}")


def decoded_lines(path: Path) -> Iterator[tuple[int, str | Problem]]:
    """Yield ``(line_number, text)`` for non-blank lines, or a Problem for bytes that are not UTF-8."""
    with open_binary(path) as raw:
        for number, data in enumerate(raw, start=1):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, utf8_problem(path, number, data, err)
                continue
            if text.strip():
                yield number, text


def parse_json_line(path: Path, number: int, text: str) -> dict | Problem:
    """The JSON value on one line, or the problem that says where it is not JSON."""
    try:
        return json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        return Problem(str(path), number, None, f"not valid JSON: {err.msg} (column {err.colno})")


def read_jsonl_records(path: Path, from_dict, problems: list[Problem]) -> Iterator:
    """Each valid record of a JSON Lines file, as ``from_dict(record)``; bad lines and repeated ids go to ``problems``.

    A record is kept once per ``id``: a later one with the same id is reported with the line of the first.
    """
    first_line_of: dict[str, int] = {}
    for number, text in decoded_lines(path):
        record = text if isinstance(text, Problem) else parse_json_line(path, number, text)
        if isinstance(record, Problem):
            problems.append(record)
            continue
        try:
            item = from_dict(record)
        except RecordError as err:
            problems.append(Problem(str(path), number, err.field, err.problem))
            continue
        if item.id in first_line_of:
            message = f"duplicate id {item.id!r} (first seen on line {first_line_of[item.id]})"
            problems.append(Problem(str(path), number, "id", message))
            continue
        first_line_of[item.id] = number
        yield item


def raise_or_report(report: LoadReport, skip_invalid: bool) -> LoadReport:
    """``report`` itself, or :class:`InvalidDataError` with its problems when there are any and not ``skip_invalid``."""
    if report.problems and not skip_invalid:
        raise InvalidDataError(report.problems)
    return report


def read_csv_rows(path: Path) -> csv.DictReader:
    """A ``DictReader`` over the whole file; undecodable bytes stay visible for :func:`check_utf8`, row by row."""
    with open_binary(path) as raw:
        # surrogateescape keeps undecodable bytes visible so each bad row is reported on its own line
        content = raw.read().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    return csv.DictReader(io.StringIO(content, newline=""))


def header_index(fieldnames: list[str] | None) -> dict[str, str]:
    """The header's columns by their case-folded, stripped name: how mapped and default names are found.

    >>> header_index([" Ticket ID", "Body"])
    {'ticket id': ' Ticket ID', 'body': 'Body'}
    """
    index: dict[str, str] = {}
    for name in fieldnames or []:
        if name is not None:
            index.setdefault(name.strip().casefold(), name)
    return index


def check_utf8(row: dict) -> None:
    """Raise for a CSV row that held bytes that are not UTF-8 (decoded as lone surrogates)."""
    for column, value in row.items():
        if not isinstance(value, str):
            continue
        for position, char in enumerate(value):
            if "\udc80" <= char <= "\udcff":
                raise RecordError(
                    str(column), f"not valid UTF-8: byte 0x{ord(char) - 0xDC00:02x} at position {position}"
                )
