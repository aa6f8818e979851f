r"""``POST /v1/reply``: the record shape of the policy's next turn over HTTP, and the service behind it.

A request::

    {"dialogues": [{"id": "optional, echoed back",
                    "history": [{"role": "customer", "text": "Someone used my card!"},
                                {"role": "agent", "text": "Could I get your name?", "knowledge": ["kb-17"]},
                                {"role": "customer", "text": "Sam Lee"}]}],
     "decoding": {"method": "best_of_n", "n": 4}}        # optional: greedy by default

An agent message may carry the ``knowledge`` (KB ids) its turn used -- send back the ``documents`` of an earlier
answer -- so the policy sees those results in the dialogue, as it did in training. Each result::

    {"id": ..., "intent": "bank_fraud_report", "search": "fraud report Sam Lee",
     "documents": [{"id": "kb-17", "title": "...", "text": "..."}], "reply": "...",
     "text": "intent: ...\\nsearch: ...\\nresults: ...\\nreply: ...", "candidates": 4,
     "reward": 0.71, "components": {...}, "weighted": {...}}

The reward is the composite's, without a gold intent (the verifier's view: see :mod:`.reply`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from csrl.data.schema import KBDocument, Turn
from csrl.dialogue.serving.reply import METHODS, AgentTurn, Decoding, Replier
from csrl.dialogue.serving.scoring import MAX_HISTORY_TURNS, MAX_KNOWLEDGE_ITEMS, HistoryMessage, require_customer

MAX_DIALOGUES_PER_REQUEST = 16
# sampled candidate turns one request may ask for (dialogues × n, × beam width for the beam): generation is the cost
MAX_SAMPLES_PER_REQUEST = 64


class DialogueMessage(HistoryMessage):
    """One earlier message; an agent's may name the KB documents its turn used."""

    knowledge: list[str] | None = Field(
        default=None, max_length=MAX_KNOWLEDGE_ITEMS, description="agent messages: KB ids its turn's search returned"
    )

    @model_validator(mode="after")
    def _knowledge_is_the_agents(self) -> DialogueMessage:
        if self.knowledge is not None and self.role != "agent":
            raise ValueError("only agent messages carry knowledge")
        return self


class DialogueInput(BaseModel):
    """A dialogue to answer: its messages so far, oldest first."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="echoed back in the result")
    history: list[DialogueMessage] = Field(min_length=1, max_length=MAX_HISTORY_TURNS)

    _has_customer = field_validator("history")(require_customer)


class DecodingInput(BaseModel):
    """How the turn is chosen (:class:`~csrl.dialogue.serving.reply.Decoding`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal[METHODS] = "greedy"  # type: ignore[valid-type]
    n: int = Field(default=4, ge=1, le=64, description="best_of_n: candidates (greedy + n-1 sampled); beam: samples")
    beam_width: int = Field(default=2, ge=1, le=16, description="beam: partial turns kept per step")
    temperature: float = Field(default=1.0, gt=0, le=5, description="sampling temperature (not used by greedy)")
    seed: int = Field(default=0, ge=0, description="the same dialogue and seed get the same turn")

    def to_decoding(self) -> Decoding:
        """The replier's decoding."""
        return Decoding(self.method, n=self.n, beam_width=self.beam_width, temperature=self.temperature,
                        seed=self.seed)  # fmt: skip

    def samples(self) -> int:
        """Candidate turns sampled per dialogue (for the request's budget)."""
        return {"greedy": 1, "sampled": 1, "best_of_n": self.n}.get(self.method, self.n * self.beam_width)


class ReplyRequest(BaseModel):
    """``POST /v1/reply`` body."""

    model_config = ConfigDict(extra="forbid")

    dialogues: list[DialogueInput] = Field(min_length=1, max_length=MAX_DIALOGUES_PER_REQUEST)
    decoding: DecodingInput = Field(default_factory=DecodingInput)

    @model_validator(mode="after")
    def _within_budget(self) -> ReplyRequest:
        asked = len(self.dialogues) * self.decoding.samples()
        if asked > MAX_SAMPLES_PER_REQUEST:
            raise ValueError(
                f"{len(self.dialogues)} dialogue(s) x {self.decoding.samples()} sampled turns = {asked} candidates: "
                f"at most {MAX_SAMPLES_PER_REQUEST} a request (fewer dialogues, or a smaller n / beam_width)"
            )
        return self


class DocumentOutput(BaseModel):
    """A knowledge-base document the turn's search returned."""

    id: str
    title: str
    text: str


class ReplyResult(BaseModel):
    """The policy's next turn for one dialogue, and its reward."""

    id: str | int | None = None
    intent: str | None = Field(description="the declared intent (null: none)")
    search: str | None = Field(description="the search query (null: no search)")
    documents: list[DocumentOutput] = Field(description="what the search returned")
    reply: str = Field(description="what the customer reads")
    text: str = Field(description="the whole turn as the policy wrote it, results included")
    candidates: int = Field(description="complete turns written and scored to choose this one")
    reward: float
    components: dict[str, float]
    weighted: dict[str, float]


class ReplyResponse(BaseModel):
    """``POST /v1/reply`` answer: one result per dialogue, in order."""

    results: list[ReplyResult]


class ReplyService:
    """Answers validated reply records with a :class:`~csrl.dialogue.serving.reply.Replier`.

    Args:
        replier: the run's policy, KB and reward.
        knowledge_base: the run's KB (``knowledge`` ids resolve against it).
    """

    def __init__(self, replier: Replier, knowledge_base: Sequence[KBDocument]):
        self.replier = replier
        self.documents = {d.id: d for d in knowledge_base}

    def check_knowledge(self, dialogue: DialogueInput) -> str | None:
        """The first unknown KB id the dialogue names, as a problem, or ``None``."""
        for i, message in enumerate(dialogue.history):
            for item in message.knowledge or ():
                if item not in self.documents:
                    return f"field 'history[{i}].knowledge': unknown knowledge-base id {item!r}"
        return None

    def history(self, dialogue: DialogueInput) -> tuple[Turn, ...]:
        """The dialogue as the policy's history: an agent message's knowledge becomes the lookup before it."""
        turns = []
        for message in dialogue.history:
            if message.knowledge:
                turns.append(Turn(role="tool", query="", results=tuple(self.documents[k] for k in message.knowledge)))
            turns.append(Turn(role=message.role, text=message.text))
        return tuple(turns)

    def reply(self, records: Sequence[tuple[DialogueInput, DecodingInput]]) -> list[ReplyResult]:
        """Answer ``(dialogue, decoding)`` records; one replier call per distinct decoding."""
        results: list[ReplyResult | None] = [None] * len(records)
        for decoding in dict.fromkeys(d for _, d in records):
            rows = [i for i, (_, d) in enumerate(records) if d == decoding]
            turns = self.replier.reply([self.history(records[i][0]) for i in rows], decoding.to_decoding())
            for i, turn in zip(rows, turns, strict=True):
                results[i] = reply_result(records[i][0].id, turn)
        return results


def reply_result(record_id, turn: AgentTurn) -> ReplyResult:
    """The HTTP result of a chosen turn."""
    return ReplyResult(
        id=record_id, intent=turn.intent, search=turn.search, reply=turn.reply, text=turn.text,
        documents=[DocumentOutput(id=d.id, title=d.title, text=d.text) for d in turn.documents],
        candidates=turn.candidates, reward=turn.reward.total, components=turn.reward.components,
        weighted=turn.reward.weighted,
    )  # fmt: skip


__all__ = [
    "MAX_DIALOGUES_PER_REQUEST",
    "MAX_SAMPLES_PER_REQUEST",
    "DecodingInput",
    "DialogueInput",
    "DialogueMessage",
    "DocumentOutput",
    "ReplyRequest",
    "ReplyResponse",
    "ReplyResult",
    "ReplyService",
    "reply_result",
]
