"""Score any bot's turns: the record shape shared by ``csrl score`` (JSON Lines) and ``csrl serve`` (HTTP).

A turn record::

    {"id": "optional, echoed back",
     "history": [{"role": "customer", "text": "Someone used my card!"}, ...],
     "reply": "Could I get your full name, please?",
     "intent": "bank_fraud_report",              # optional: the bot's declared intent
     "knowledge": ["star-task-bank_fraud_report", "or any text the bot used"],   # optional
     "gold_intent": "bank_fraud_report"}         # optional: the customer's true intent, if known

and its result::

    {"id": ..., "reward": 0.83, "components": {"intent": 1.0, "retrieval": 0.71, "satisfaction": 0.9},
     "weighted": {"intent": 0.3, "retrieval": 0.355, "satisfaction": 0.18}}

``knowledge`` items that are ids of the run's knowledge base are replaced by those documents;
other strings are taken as the text of the knowledge the bot used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from csrl.data.schema import KBDocument, Turn
from csrl.rewards.composite import CompositeReward
from csrl.rewards.context import TurnContext

MAX_TEXT_CHARS = 4000
MAX_HISTORY_TURNS = 200
MAX_KNOWLEDGE_ITEMS = 20
MAX_TURNS_PER_REQUEST = 256


class HistoryMessage(BaseModel):
    """One earlier message of the dialogue."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["customer", "agent"]
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


def require_customer(history: list[HistoryMessage]) -> list[HistoryMessage]:
    """A request's history, if it holds a customer message (a dialogue to score or answer needs one)."""
    if not any(m.role == "customer" for m in history):
        raise ValueError("needs at least one customer message")
    return history


class TurnInput(BaseModel):
    """One bot turn to score, in its context."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="echoed back in the result")
    history: list[HistoryMessage] = Field(
        min_length=1, max_length=MAX_HISTORY_TURNS, description="the dialogue before the turn, oldest first"
    )
    reply: str = Field(max_length=MAX_TEXT_CHARS, description="what the bot said")
    intent: str | None = Field(default=None, description="the bot's declared intent; omit if it declares none")
    knowledge: list[str] | None = Field(
        default=None,
        max_length=MAX_KNOWLEDGE_ITEMS,
        description="KB document ids or texts the bot used; omit if it used none",
    )
    gold_intent: str | None = Field(default=None, description="the customer's true intent, if known")

    _has_customer = field_validator("history")(require_customer)


class ScoreRequest(BaseModel):
    """``POST /v1/score`` body."""

    model_config = ConfigDict(extra="forbid")

    turns: list[TurnInput] = Field(min_length=1, max_length=MAX_TURNS_PER_REQUEST)


class TurnResult(BaseModel):
    """The score of one turn: the total and each component's raw and weighted score."""

    id: str | int | None = None
    reward: float
    components: dict[str, float]
    weighted: dict[str, float]


class ScoreResponse(BaseModel):
    """``POST /v1/score`` answer: one result per turn, in order."""

    results: list[TurnResult]


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``field 'history[0].role': Input should be 'customer' or 'agent'``."""
    lines = []
    for problem in err.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem["loc"]).lstrip(".")
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}field '{where}': {message}" if where else f"{prefix}{message}")
    return "; ".join(lines)


class TurnScorer:
    """Turns records into reward contexts and scores them with a composite reward.

    Args:
        reward: the composite reward of a trained run.
        knowledge_base: the run's KB (ids in ``knowledge`` resolve against it).
        intents: the intent labels the reward models know; declared/gold intents outside it are refused.
    """

    def __init__(self, reward: CompositeReward, knowledge_base: Sequence[KBDocument], intents: Iterable[str]):
        self.reward = reward
        self.documents = {d.id: d for d in knowledge_base}
        self.intents = set(intents)

    def check_intents(self, record: TurnInput) -> str | None:
        """The problem with the record's intents, or ``None``."""
        for name in ("intent", "gold_intent"):
            value = getattr(record, name)
            if value is not None and value not in self.intents:
                known = ", ".join(sorted(self.intents)[:30])
                return f"field '{name}': unknown intent {value!r}; known: {known} (omit it to let the model infer)"
        return None

    def context(self, record: TurnInput) -> TurnContext:
        """The reward context of a validated record."""
        knowledge = None
        if record.knowledge is not None:
            knowledge = tuple(
                self.documents.get(item) or KBDocument(id=f"inline-{i}", text=item)
                for i, item in enumerate(record.knowledge)
                if item.strip()
            )
        return TurnContext(
            history=tuple(Turn(role=m.role, text=m.text) for m in record.history),
            reply=record.reply,
            declared_intent=record.intent,
            knowledge=knowledge,
            gold_intent=record.gold_intent,
        )

    def score(self, records: Sequence[TurnInput]) -> list[TurnResult]:
        """Score validated records in one batch."""
        breakdowns = self.reward.score([self.context(r) for r in records])
        return [
            TurnResult(id=r.id, reward=b.total, components=b.components, weighted=b.weighted)
            for r, b in zip(records, breakdowns, strict=True)
        ]


def score_file(scorer: TurnScorer, source: str | Path, out, batch_size: int = 64) -> tuple[int, list[str]]:
    """Score every valid line of a JSON Lines file, writing one result line per valid record.

    Invalid lines are reported (with their line numbers) and skipped; valid ones are still scored.

    Returns:
        (number of turns scored, problems as ``FILE:LINE: ...`` strings).
    """
    problems: list[str] = []
    batch: list[TurnInput] = []
    scored = 0

    def flush():
        nonlocal scored
        for result in scorer.score(batch):
            out.write(json.dumps(result.model_dump(), ensure_ascii=False) + "\n")
        scored += len(batch)
        batch.clear()

    with open(source, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{source}:{number}: "
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(f"{where}not valid UTF-8: byte 0x{raw[err.start]:02x} at position {err.start}")
                continue
            if not text.strip():
                continue
            try:
                record = TurnInput.model_validate_json(text)
            except ValidationError as err:
                problems.append(describe_validation_error(err, where))
                continue
            problem = scorer.check_intents(record)
            if problem:
                problems.append(where + problem)
                continue
            batch.append(record)
            if len(batch) >= batch_size:
                flush()
    if batch:
        flush()
    return scored, problems
