"""Customers simulated from the logs.

A logged conversation is cut into *slots*, one per logged agent turn: the customer messages that
came before it, the customer intent it served (the gold label) and the logged reply (the human
reference). Both simulators open an episode with the first slot's customer messages; they differ
in what the customer says after the policy's reply:

- :class:`ReplayCustomer` says what the logged customer said next, whatever the policy wrote.
- :class:`ReactiveCustomer` answers like the logged customers who got the most similar logged agent
  turn of the same intent: it finds the logged agent turns closest to the policy's reply (cosine of
  sentence embeddings) and replays the customer messages that followed one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from csrl.data.schema import Conversation, Turn

if TYPE_CHECKING:  # the encoder (torch) loads with the reactive customer that uses it, not with the package
    from csrl.rewards.encoder import TextEncoder


@dataclass(frozen=True)
class Slot:
    """One logged agent turn and the customer messages just before it.

    Attributes:
        customer_turns: the customer messages since the previous agent turn (may be empty).
        intent: the customer intent this turn served (turn label, else conversation label).
        reply: the logged agent reply.
        agent_turn_index: index of the logged agent turn in ``conversation.turns``.
        search: the query of the logged knowledge-base lookup made just before the reply, if any.
    """

    customer_turns: tuple[Turn, ...]
    intent: str | None
    reply: str
    agent_turn_index: int
    search: str | None = None


def conversation_slots(conversation: Conversation) -> list[Slot]:
    """Cut a logged conversation into agent-turn slots (tool turns are left out: the policy searches itself)."""
    slots, pending, search = [], [], None
    for i, turn in enumerate(conversation.turns):
        if turn.role == "customer":
            pending.append(turn)
        elif turn.role == "tool":
            search = turn.query
        else:
            slots.append(Slot(tuple(pending), turn.intent or conversation.intent, turn.text, i, search))
            pending, search = [], None
    return slots


def trailing_customer_turns(conversation: Conversation) -> tuple[Turn, ...]:
    """Customer messages after the last agent turn (the customer's closing words, if any)."""
    last_agent = max(i for i, t in enumerate(conversation.turns) if t.role == "agent")
    return tuple(t for t in conversation.turns[last_agent + 1 :] if t.role == "customer")


@dataclass(frozen=True)
class CustomerResponse:
    """What the customer does after an agent turn: its messages, and whether it ends the conversation."""

    turns: tuple[Turn, ...]
    ends_conversation: bool


class ReplayCustomer:
    """The logged customer: after agent slot ``k`` it says what it said before logged slot ``k + 1``."""

    name = "replay"

    def respond(
        self, conversation: Conversation, slots: list[Slot], slot_index: int, reply: str, rng
    ) -> CustomerResponse:
        """The customer messages before the next slot; the conversation ends after the last slot."""
        if slot_index + 1 < len(slots):
            return CustomerResponse(slots[slot_index + 1].customer_turns, ends_conversation=False)
        return CustomerResponse(trailing_customer_turns(conversation), ends_conversation=True)


@dataclass(frozen=True)
class _LoggedReaction:
    agent_text: str
    customer_turns: tuple[Turn, ...]
    ends_conversation: bool


class ReactiveCustomer:
    """A customer who reacts to what the policy actually said.

    Args:
        conversations: the logs to draw reactions from (use the training split).
        encoder: the shared sentence encoder (its cache makes repeated replies free).
        top_k: the reaction is drawn uniformly from the ``top_k`` most similar logged agent turns.
    """

    name = "reactive"

    def __init__(self, conversations: list[Conversation], encoder: TextEncoder, top_k: int = 3):
        if top_k < 1:
            raise ValueError(f"top_k={top_k}: need at least 1 candidate reaction")
        self.encoder = encoder
        self.top_k = top_k
        self._reactions: dict[str | None, list[_LoggedReaction]] = {}
        for conversation in conversations:
            slots = conversation_slots(conversation)
            for k, slot in enumerate(slots):
                if k + 1 < len(slots):
                    reaction = _LoggedReaction(slot.reply, slots[k + 1].customer_turns, False)
                else:
                    reaction = _LoggedReaction(slot.reply, trailing_customer_turns(conversation), True)
                self._reactions.setdefault(slot.intent, []).append(reaction)
        if not self._reactions:
            raise ValueError("a reactive customer needs logged conversations with agent turns")
        self._embeddings: dict[str | None, np.ndarray] = {}

    def _candidates(self, intent: str | None) -> tuple[list[_LoggedReaction], np.ndarray]:
        if intent not in self._reactions:  # an intent the logs never served: react like anyone
            intent = max(self._reactions, key=lambda k: len(self._reactions[k]))
        if intent not in self._embeddings:
            self._embeddings[intent] = self.encoder.encode([r.agent_text for r in self._reactions[intent]])
        return self._reactions[intent], self._embeddings[intent]

    def respond(
        self, conversation: Conversation, slots: list[Slot], slot_index: int, reply: str, rng
    ) -> CustomerResponse:
        """Replay the reaction to one of the logged agent turns most similar to ``reply`` (same intent)."""
        reactions, embeddings = self._candidates(slots[min(slot_index, len(slots) - 1)].intent)
        similarity = embeddings @ self.encoder.encode([reply])[0]  # (N,)
        k = min(self.top_k, len(reactions))
        best = np.argpartition(-similarity, k - 1)[:k]
        best = best[np.argsort(-similarity[best], kind="stable")]  # deterministic order before the draw
        chosen = reactions[int(best[rng.integers(k)])]
        return CustomerResponse(chosen.customer_turns, chosen.ends_conversation)
