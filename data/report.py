"""What a loader returns: the records it read and the problems it found, each with its place."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from csrl.data.schema import Conversation, KBDocument


@dataclass(frozen=True)
class Problem:
    """One invalid record: where it is and what was wrong.

    >>> str(Problem("logs.jsonl", 3, "turns[1].role", "expected one of customer, agent, tool, got 'bot'"))
    "logs.jsonl:3: field 'turns[1].role': expected one of customer, agent, tool, got 'bot'"
    >>> str(Problem("logs.jsonl", 4, None, "not valid JSON: Expecting value (column 1)"))
    'logs.jsonl:4: not valid JSON: Expecting value (column 1)'
    """

    source: str
    line: int
    field: str | None
    message: str

    @property
    def reason(self) -> str:
        """The kind of problem, for counting: field and message without indexes, values and details.

        >>> Problem("f", 3, "turns[1].role", "expected one of customer, agent, tool, got 'bot'").reason
        'turns[].role: expected one of customer, agent, tool'
        >>> Problem("f", 9, "id", "duplicate id 'c7' (first seen on line 2)").reason
        'id: duplicate id'
        """
        message = re.sub(r" \(.*\)$", "", self.message)  # parenthetical detail
        message = re.sub(r" '.*'", "", message.split(", got ")[0].split(": ")[0])  # values
        if not self.field:
            return message
        return re.sub(r"\[\d+\]", "[]", self.field) + ": " + message

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}: "
        return where + (f"field '{self.field}': {self.message}" if self.field else self.message)


@dataclass
class LoadReport:
    """Conversations (or KB documents) read from one source, and the records that were not valid."""

    source: str
    conversations: list[Conversation] = field(default_factory=list)
    documents: list[KBDocument] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def skipped_reasons(self) -> dict[str, int]:
        """How many records were skipped for each kind of problem."""
        return dict(Counter(p.reason for p in self.problems).most_common())


class InvalidDataError(ValueError):
    """A source held invalid records and ``skip_invalid`` was off. ``problems`` lists them all."""

    def __init__(self, problems: list[Problem], limit: int = 20):
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:limit])
        more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(
            f"{len(problems)} invalid record(s); fix them or pass --skip-invalid to skip them:\n{shown}{more}"
        )
