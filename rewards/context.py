"""What every reward stage scores: one agent turn in its context.

``TurnContext`` is built from a logged conversation (training, evaluation), from the environment
(a policy's turn) or from a request (``csrl score`` / ``csrl serve``). The text views below are the
only way stages read a context, so that the shared encoder sees the same strings from every stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from csrl.data.schema import Conversation, KBDocument, Turn

ROUNDS_FOR_SATISFACTION = 3  # the design scores satisfaction from the last three rounds


class Need(str):
    """The customer's need: their messages joined newest first, as text, remembering the messages.

    Everywhere it is a plain string (BM25 reads its words, logs print it). Only a
    :class:`~csrl.rewards.encoder.TextEncoder` with ``need_embedding="messages"`` looks inside: it embeds each
    message once and takes their mean, so a message embedded at one turn is reused at every later turn.

    >>> need = Need(["book a table", "hi"])
    >>> need, need.messages
    ('book a table hi', ('book a table', 'hi'))
    """

    messages: tuple[str, ...]

    def __new__(cls, messages_newest_first):  # noqa: D102 - the class docstring says it
        messages = tuple(messages_newest_first)
        need = super().__new__(cls, " ".join(messages))
        need.messages = messages
        return need

    def __getnewargs__(self):  # pickling rebuilds it from its messages, not from the joined text
        return (self.messages,)


@dataclass(frozen=True)
class TurnContext:
    """One agent turn to score.

    Attributes:
        history: the dialogue before the turn (customer, agent and tool turns), oldest first.
        reply: the text the agent sends.
        declared_intent: the turn's ``intent:`` line; ``None`` for a bot that declares none.
        knowledge: documents the turn used (its search results, or what a live bot sent);
            ``None`` when the turn used none: the stage then finds the KB documents that best
            support the reply.
        gold_intent: the customer's intent where the logs label it.
        search_query: the turn's ``search:`` line, if it searched.

    """

    history: tuple[Turn, ...]
    reply: str
    declared_intent: str | None = None
    knowledge: tuple[KBDocument, ...] | None = None
    gold_intent: str | None = None
    search_query: str | None = None

    def customer_messages(self) -> list[str]:
        """The customer's messages so far, oldest first."""
        return [t.text for t in self.history if t.role == "customer"]

    def last_customer_message(self) -> str:
        """The customer's latest message (``""`` before they said anything).

        >>> ctx = TurnContext((Turn("customer", "hi"), Turn("agent", "Hello!"), Turn("customer", "book a table")), "ok")
        >>> ctx.last_customer_message(), ctx.previous_agent_replies()
        ('book a table', ['Hello!'])
        """
        said = self.customer_messages()
        return said[-1] if said else ""

    def previous_agent_replies(self) -> list[str]:
        """The agent's earlier replies in this dialogue, oldest first."""
        return [t.text for t in self.history if t.role == "agent"]

    def previous_agent_reply(self) -> str:
        """The agent's reply before this one (``""`` at the first agent turn)."""
        replies = self.previous_agent_replies()
        return replies[-1] if replies else ""

    def need_text(self) -> Need:
        """What the customer wants: all their messages so far, newest first (so truncation drops the oldest)."""
        return Need(self.customer_messages()[::-1])

    def moment_texts(self) -> tuple[str, str, str]:
        """Where the dialogue stands: the need text, the last customer message and the agent's previous reply.

        The intent and satisfaction stages embed these same three strings, so the shared encoder embeds them once.
        """
        return self.need_text(), self.last_customer_message(), self.previous_agent_reply()

    def recent_text(self, rounds: int = ROUNDS_FOR_SATISFACTION) -> str:
        """The last ``rounds`` customer/agent rounds as ``role: text`` lines, oldest first."""
        spoken = [t for t in self.history if t.role in ("customer", "agent")]
        customers = [i for i, t in enumerate(spoken) if t.role == "customer"]
        start = customers[-rounds] if len(customers) >= rounds else 0
        return "\n".join(f"{t.role}: {t.text}" for t in spoken[start:])


def moment_columns(contexts: Sequence[TurnContext]) -> list[str]:
    """Every context's need text, then every last customer message, then every previous agent reply.

    The one order in which the intent and satisfaction stages embed :meth:`TurnContext.moment_texts`.
    """
    moments = [ctx.moment_texts() for ctx in contexts]
    return [m[j] for j in range(3) for m in moments]


def contexts_from_conversation(conversation: Conversation) -> list[TurnContext]:
    """One context per logged agent turn, with the knowledge of the tool turns since the last agent turn.

    The customer's gold intent is the turn's label where the log has one (STAR labels each agent
    turn with the task being served, which changes inside multi-task dialogues), else the
    conversation's; the logged reply declares that same label.
    """
    contexts = []
    found: list[KBDocument] = []
    query = None
    for i, turn in enumerate(conversation.turns):
        if turn.role == "tool":
            found.extend(turn.results)
            query = turn.query
        elif turn.role == "agent":
            contexts.append(
                TurnContext(
                    history=conversation.turns[:i],
                    reply=turn.text,
                    declared_intent=turn.intent,
                    knowledge=tuple(found) if query is not None else None,
                    gold_intent=turn.intent or conversation.intent,
                    search_query=query,
                )
            )
            found, query = [], None
    return contexts
