"""The canonical chat-log record: conversations, turns, knowledge-base documents.

Every source (STAR, generic JSON Lines, a flat CSV of turns) is turned into these frozen
dataclasses. ``from_dict`` validates a plain mapping and raises :class:`RecordError` naming the
field that was wrong and what was expected; the loaders add the file and line.

>>> conv = Conversation.from_dict({"id": "c1", "turns": [
...     {"role": "customer", "text": "Hi, my card was stolen"},
...     {"role": "agent", "text": "I can help with that.", "intent": "bank_fraud_report"}]})
>>> conv.turns[1].intent
'bank_fraud_report'
>>> Conversation.from_dict(conv.to_dict()) == conv
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = ("customer", "agent", "tool")
SPLITS = ("train", "validation", "test")
RATING_RANGE = (1, 5)


class RecordError(ValueError):
    """A record does not match the schema.

    Attributes:
        field: dotted path of the offending field inside the record, e.g. ``turns[2].role``.
        problem: what was wrong and what was expected.

    """

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"field '{field}': {problem}")


def _describe(value: Any) -> str:
    """A short, readable rendering of a bad value for error messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _require_str(record: dict, key: str, where: str, *, allow_empty: bool = False) -> str:
    if key not in record:
        raise RecordError(where + key, "missing (expected a string)")
    value = record[key]
    if not isinstance(value, str):
        raise RecordError(where + key, f"expected a string, got {type(value).__name__} {_describe(value)}")
    if not allow_empty and not value.strip():
        raise RecordError(where + key, "empty (expected non-empty text)")
    return value


def _optional_str(record: dict, key: str, where: str) -> str | None:
    if record.get(key) is None:
        return None
    return _require_str(record, key, where)


def _require_mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RecordError(where, f"expected an object, got {type(value).__name__} {_describe(value)}")
    return value


@dataclass(frozen=True)
class KBDocument:
    """A knowledge-base document: the unit that retrieval indexes and tool turns return."""

    id: str
    text: str
    title: str = ""
    intent: str | None = None

    @classmethod
    def from_dict(cls, record: Any, where: str = "") -> KBDocument:
        """Validate and build a document from ``{"id", "text", "title"?, "intent"?}``."""
        record = _require_mapping(record, where.rstrip(".") or "document")
        return cls(
            id=_require_str(record, "id", where),
            text=_require_str(record, "text", where),
            title=_require_str(record, "title", where, allow_empty=True) if "title" in record else "",
            intent=_optional_str(record, "intent", where),
        )

    def to_dict(self) -> dict:
        """The JSON form; ``intent`` only when set."""
        out = {"id": self.id, "title": self.title, "text": self.text}
        if self.intent is not None:
            out["intent"] = self.intent
        return out


@dataclass(frozen=True)
class Turn:
    """One message of a conversation.

    ``customer`` and ``agent`` turns carry ``text``; a ``tool`` turn is a knowledge-base lookup the
    agent made and carries ``query`` and ``results`` (its ``text`` is empty).
    """

    role: str
    text: str = ""
    intent: str | None = None
    rating: int | None = None
    query: str | None = None
    results: tuple[KBDocument, ...] = ()

    @classmethod
    def from_dict(cls, record: Any, where: str = "") -> Turn:
        """Validate and build a turn; ``where`` prefixes field names in errors (``turns[3].``)."""
        record = _require_mapping(record, where.rstrip(".") or "turn")
        if "role" not in record:
            raise RecordError(where + "role", f"missing (expected one of {', '.join(ROLES)})")
        role = record["role"]
        if role not in ROLES:
            raise RecordError(where + "role", f"expected one of {', '.join(ROLES)}, got {_describe(role)}")
        if role == "tool":
            query = _require_str(record, "query", where)
            results = record.get("results", [])
            if not isinstance(results, list):
                raise RecordError(where + "results", f"expected a list of documents, got {type(results).__name__}")
            docs = tuple(KBDocument.from_dict(r, f"{where}results[{i}].") for i, r in enumerate(results))
            return cls(role=role, query=query, results=docs)
        rating = record.get("rating")
        if rating is not None:
            if role != "customer":
                raise RecordError(where + "rating", "only customer turns carry a rating")
            low, high = RATING_RANGE
            if isinstance(rating, bool) or not isinstance(rating, int) or not low <= rating <= high:
                raise RecordError(
                    where + "rating", f"expected an integer from {low} to {high}, got {_describe(rating)}"
                )
        return cls(
            role=role,
            text=_require_str(record, "text", where),
            intent=_optional_str(record, "intent", where),
            rating=rating,
        )

    def to_dict(self) -> dict:
        """The JSON form, leaving out unset optional fields."""
        if self.role == "tool":
            return {"role": "tool", "query": self.query, "results": [d.to_dict() for d in self.results]}
        out: dict = {"role": self.role, "text": self.text}
        if self.intent is not None:
            out["intent"] = self.intent
        if self.rating is not None:
            out["rating"] = self.rating
        return out


@dataclass(frozen=True)
class Outcome:
    """How the conversation ended, where the logs say: ``None`` means unknown."""

    satisfied: bool | None = None
    completed: bool | None = None

    @classmethod
    def from_dict(cls, record: Any, where: str = "outcome.") -> Outcome:
        """Validate ``{"satisfied"?: bool, "completed"?: bool}``."""
        record = _require_mapping(record, where.rstrip("."))
        values = {}
        for key in ("satisfied", "completed"):
            value = record.get(key)
            if value is not None and not isinstance(value, bool):
                raise RecordError(where + key, f"expected true, false or null, got {_describe(value)}")
            values[key] = value
        return cls(**values)

    def to_dict(self) -> dict:
        """The JSON form."""
        return {"satisfied": self.satisfied, "completed": self.completed}


@dataclass(frozen=True)
class Conversation:
    """One logged conversation between a customer and an agent."""

    id: str
    turns: tuple[Turn, ...]
    intent: str | None = None
    split: str | None = None
    outcome: Outcome | None = None

    @classmethod
    def from_dict(cls, record: Any) -> Conversation:
        """Validate and build a conversation; raises :class:`RecordError` on the first problem."""
        record = _require_mapping(record, "record")
        conv_id = record.get("id")
        if isinstance(conv_id, int) and not isinstance(conv_id, bool):
            conv_id = str(conv_id)
        if conv_id is None:
            raise RecordError("id", "missing (expected a string)")
        conv_id = _require_str({"id": conv_id}, "id", "")
        turns = record.get("turns")
        if not isinstance(turns, list) or not turns:
            got = "missing" if turns is None else f"got {_describe(turns)}"
            raise RecordError("turns", f"expected a non-empty list of turns, {got}")
        parsed = tuple(Turn.from_dict(t, f"turns[{i}].") for i, t in enumerate(turns))
        if not any(t.role == "agent" for t in parsed):
            raise RecordError("turns", "no agent turn (a conversation needs at least one agent reply)")
        split = record.get("split")
        if split is not None and split not in SPLITS:
            raise RecordError("split", f"expected one of {', '.join(SPLITS)} or null, got {_describe(split)}")
        outcome = record.get("outcome")
        return cls(
            id=conv_id,
            turns=parsed,
            intent=_optional_str(record, "intent", ""),
            split=split,
            outcome=None if outcome is None else Outcome.from_dict(outcome),
        )

    def to_dict(self) -> dict:
        """The canonical JSON form (one line of a conversations ``.jsonl`` file)."""
        out: dict = {"id": self.id}
        if self.intent is not None:
            out["intent"] = self.intent
        if self.split is not None:
            out["split"] = self.split
        out["turns"] = [t.to_dict() for t in self.turns]
        if self.outcome is not None:
            out["outcome"] = self.outcome.to_dict()
        return out
