"""Knowledge bases in the shapes help centres export: JSON Lines, CSV, or a folder of Markdown / text files.

:func:`read_knowledge_base` reads any of them into a report; :func:`load_knowledge_base` returns
its documents. A folder's files are cut into chunks (:func:`chunk_markdown`): at Markdown headings
(``#``, ``##``, ``###``), each chunk titled ``file title > heading``, long sections further at
paragraph boundaries to at most :data:`MAX_CHUNK_CHARS` characters. A chunk's id is the file's
path inside the folder and the chunk's index in the file (``billing/refunds.md#2``).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

from csrl.data.reading import (
    SourceReport,
    check_file,
    check_utf8,
    format_of,
    header_index,
    raise_or_report,
    read_csv_rows,
    read_jsonl_records,
)
from csrl.data.report import Problem
from csrl.data.schema import KBDocument, RecordError

KB_CSV_COLUMNS = ("id", "title", "text", "intent")  # text required; no id: a hash of title and text
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")  # the files of a help-centre folder
MAX_CHUNK_CHARS = 1000
_HEADING = re.compile(r"^ {0,3}(#{1,3})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _cut_long(text: str, max_chars: int) -> list[str]:
    """Pieces of one paragraph of at most ``max_chars``: cut at a line or sentence end, else a space."""
    pieces = []
    while len(text) > max_chars:
        window = text[: max_chars + 1]
        cut = max(window.rfind("\n"), *(window.rfind(end) + 1 for end in (". ", "! ", "? ")))
        if cut < max_chars // 4:  # no late line or sentence end: cut at the last space instead
            cut = window.rfind(" ")
        if cut <= 0:
            cut = max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [*pieces, text] if text else pieces


def split_paragraphs(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    r"""``text`` in pieces of at most ``max_chars``, whole paragraphs together where they fit.

    >>> split_paragraphs("One.\n\nTwo.\n\nThree is longer.", max_chars=12)
    ['One.\n\nTwo.', 'Three is', 'longer.']
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    pieces: list[str] = []
    current = ""
    for paragraph in re.split(r"\n[ \t]*\n", text):
        for part in _cut_long(paragraph.strip(), max_chars):
            if current and len(current) + 2 + len(part) <= max_chars:
                current = f"{current}\n\n{part}"
            else:
                pieces += [current] if current else []
                current = part
    return [*pieces, current] if current else pieces


def chunk_markdown(
    text: str, title: str, *, max_chars: int = MAX_CHUNK_CHARS, headings: bool = True
) -> list[tuple[str, str]]:
    r"""``(title, text)`` chunks of a Markdown file: one per section, long ones split at paragraphs.

    A chunk is titled with ``title`` and the headings above it (``#`` to ``###``; deeper ones stay
    in the text), leaving out a heading equal to ``title``. Headings inside fenced code do not count;
    sections with no text make no chunk. ``headings=False`` reads a plain text file (paragraphs only).

    >>> page = "# Refunds\nHow refunds work.\n## Eligibility\nWithin 30 days.\n### Digital goods\nNever.\n## x\n"
    >>> for title, text in chunk_markdown(page, "Refunds"):
    ...     print(f"{title!r}: {text!r}")
    'Refunds': 'How refunds work.'
    'Refunds > Eligibility': 'Within 30 days.'
    'Refunds > Eligibility > Digital goods': 'Never.'
    """
    sections: list[tuple[list[str], list[str]]] = [([], [])]
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence or not headings else _HEADING.match(line)
        if heading is None:
            sections[-1][1].append(line)
            continue
        level = len(heading.group(1))
        trail = sections[-1][0][: level - 1] + [heading.group(2).strip()]
        sections.append((trail, []))
    chunks = []
    for trail, lines in sections:
        chunk_title = " > ".join([title] + [h for h in trail if h != title])
        chunks += [(chunk_title, piece) for piece in split_paragraphs("\n".join(lines), max_chars)]
    return chunks


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """``key: value`` lines of a leading ``---`` block (help-centre exports write title and intent there)."""
    match = re.match(r"---\n(.*?)\n---[ \t]*(?:\n|$)", text, re.DOTALL)
    if not match:
        return {}, text
    fields = {}
    for line in match.group(1).split("\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields[key.strip().lower()] = value.strip().strip("\"'")
    return fields, text[match.end() :]


def _file_title(path: Path, body: str, markdown: bool) -> str:
    """The first ``#`` heading of a Markdown file, else the file name in words."""
    in_fence = False
    for line in body.split("\n") if markdown else []:
        in_fence = not in_fence if _FENCE.match(line) else in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading and len(heading.group(1)) == 1:
            return heading.group(2).strip()
    return re.sub(r"[-_\s]+", " ", path.stem).strip() or path.name


def _file_documents(path: Path, name: str, report: SourceReport, max_chars: int) -> list[KBDocument]:
    """The chunks of one Markdown / text file as documents ``name#index``; problems and empties reported."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        position = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        message = f"not valid UTF-8: byte 0x{data[err.start]:02x} at position {position} (file skipped)"
        report.problems.append(Problem(str(path), line, None, message))
        return []
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    fields, body = _front_matter(text)
    markdown = path.suffix.lower() != ".txt"
    title = fields.get("title") or _file_title(path, body, markdown)
    chunks = chunk_markdown(body, title, max_chars=max_chars, headings=markdown)
    if not chunks:
        what = "empty file" if not body.strip() else "no text under its headings"
        report.ignored.append(Problem(str(path), 1, None, f"{what} (no document)"))
    intent = fields.get("intent") or None
    return [KBDocument(id=f"{name}#{i}", text=t, title=h, intent=intent) for i, (h, t) in enumerate(chunks)]


def _read_folder(folder: Path, max_chars: int) -> SourceReport:
    report = SourceReport(source=str(folder))
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        name = path.name if path == folder else path.relative_to(folder).as_posix()
        if path.suffix.lower() not in DOCUMENT_SUFFIXES:
            kinds = ", ".join(DOCUMENT_SUFFIXES)
            report.ignored.append(Problem(str(path), 1, None, f"not a Markdown or text file (skipped; read: {kinds})"))
            continue
        report.documents += _file_documents(path, name, report, max_chars)
    return report


def content_id(title: str, text: str) -> str:
    """A stable id for a document that has none: a hash of its title and text.

    >>> content_id("Hours", "Open 9-5")
    'kb-4181329573eeefc0'
    """
    return "kb-" + hashlib.sha256(f"{title}\x1f{text}".encode()).hexdigest()[:16]


def _read_csv(path: Path) -> SourceReport:
    report = SourceReport(source=str(path))
    reader = read_csv_rows(path)
    index = header_index(reader.fieldnames)
    if "text" not in index:
        header = ", ".join(n for n in reader.fieldnames or [] if n is not None) or "(empty)"
        expected = "[id,] [title,] text[, intent]"
        raise ValueError(f"{path}:1: CSV header lacks column text; expected {expected}, got {header}")
    columns = {c: index[c] for c in KB_CSV_COLUMNS if c in index}
    seen: dict[str, int] = {}
    for row in reader:
        number = reader.line_num
        values = {c: (row.get(name) or "").strip() for c, name in columns.items()}
        try:
            check_utf8(values)
            doc_id = values.get("id") or content_id(values.get("title", ""), values["text"])
            record = {"id": doc_id, "text": values["text"], "title": values.get("title", "")}
            doc = KBDocument.from_dict({**record, "intent": values.get("intent") or None})
        except RecordError as err:
            report.problems.append(Problem(str(path), number, columns.get(err.field, err.field), err.problem))
            continue
        if doc.id in seen:
            same = "" if values.get("id") else "same title and text as "
            message = f"duplicate id {doc.id!r} ({same}first seen on line {seen[doc.id]})"
            report.problems.append(Problem(str(path), number, "id", message))
            continue
        seen[doc.id] = number
        report.documents.append(doc)
    return report


def _read_jsonl(path: Path) -> SourceReport:
    report = SourceReport(source=str(path))
    report.documents.extend(read_jsonl_records(path, KBDocument.from_dict, report.problems))
    return report


def read_knowledge_base(path: str | Path, *, max_chars: int = MAX_CHUNK_CHARS) -> SourceReport:
    """Read KB documents ``{"id", "text", "title"?, "intent"?}`` from any supported shape.

    - a folder: its ``.md`` / ``.markdown`` / ``.txt`` files, chunked (see the module docstring);
      other files and empty ones are counted in ``ignored``. A single ``.md`` / ``.txt`` file reads the same way.
    - ``.csv[.gz]``: columns ``[id,] [title,] text[, intent]``; a row without an id gets :func:`content_id`.
    - anything else: JSON Lines, one document a line (``.gz`` allowed).

    Invalid and duplicate documents are reported in ``problems``, never raised.

    Raises:
        ValueError: a CSV without a ``text`` column.

    """
    path = check_file(path, allow_dir=True)
    if path.is_dir() or path.suffix.lower() in DOCUMENT_SUFFIXES:
        return _read_folder(path, max_chars)
    if format_of(path) == ".csv":
        return _read_csv(path)
    return _read_jsonl(path)


def load_knowledge_base(path: str | Path, *, skip_invalid: bool = False) -> list[KBDocument]:
    """The valid documents of a knowledge base in any shape :func:`read_knowledge_base` reads.

    Files left out by design (empty, not Markdown or text) are counted in a warning, never fatal.

    Raises:
        InvalidDataError: invalid or duplicate documents and ``skip_invalid`` is off.
        ValueError: the source holds no valid document at all.

    """
    report = read_knowledge_base(path)
    raise_or_report(report, skip_invalid)
    ignored = report.ignored
    if ignored:
        warnings.warn(f"{path}: left out {len(ignored)} file(s): {'; '.join(map(str, ignored[:5]))}", stacklevel=2)
    if not report.documents:
        raise ValueError(f"{path}: the knowledge base holds no valid document")
    return report.documents
