r"""``csrl chat``: talk to a trained policy in the terminal, with you as the customer.

Each agent turn is shown as the process the policy wrote -- its intent, its search and what the knowledge base
returned, its reply -- and the composite's per-stage scores (no gold intent: the intent stage reads the
customer's intent from the dialogue, as at answer time). Lines starting with ``/`` are commands:

- ``/quit`` (or end of input): leave;
- ``/reset``: start a new conversation;
- ``/decoding METHOD [N]``: ``greedy``, ``sampled``, ``best_of_n`` or ``beam`` from the next turn on;
- ``/help``: these commands.

>>> from csrl.data.schema import KBDocument
>>> from csrl.rewards.composite import RewardBreakdown
>>> from csrl.dialogue.serving.reply import AgentTurn
>>> turn = AgentTurn(intent="bank_balance", search="balance Sam Lee",
...                  documents=(KBDocument("kb-7", "Balance: $1,200", "Sam Lee's account"),),
...                  reply="Your balance is $1,200.", text="",
...                  reward=RewardBreakdown(0.64, {"intent": 1.0, "retrieval": 0.5, "satisfaction": 0.45},
...                                         {"intent": 0.3, "retrieval": 0.25, "satisfaction": 0.09}))
>>> print(render_turn(turn, stages=("intent", "retrieval", "satisfaction")))
  intent: bank_balance
  search: balance Sam Lee
    [1] kb-7  Sam Lee's account: Balance: $1,200
agent: Your balance is $1,200.
  reward 0.640 = intent 1.000 x 0.3 + retrieval 0.500 x 0.5 + satisfaction 0.450 x 0.2
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from csrl.data.schema import Turn
from csrl.dialogue.serving.reply import METHODS, AgentTurn, Decoding, Replier

HELP = "type as the customer; /decoding METHOD [N] (greedy, sampled, best_of_n, beam), /reset (new conversation), /quit"


def render_turn(turn: AgentTurn, stages: Sequence[str], result_chars: int = 100) -> str:
    """An agent turn as the terminal shows it: its process, its reply, its reward by stage (see the module)."""
    lines = [f"  intent: {turn.intent or '(none declared)'}"]
    if turn.search is not None:
        lines.append(f"  search: {turn.search}")
        for i, doc in enumerate(turn.documents, start=1):
            body = " ".join((f"{doc.title}: {doc.text}" if doc.title else doc.text).split())
            body = body[: result_chars - 3] + "..." if len(body) > result_chars else body
            lines.append(f"    [{i}] {doc.id}  {body}")
        if not turn.documents:
            lines.append("    (nothing found)")
    lines.append(f"agent: {turn.reply or '(no reply)'}")
    parts = []
    for stage in stages:
        raw, weighted = turn.reward.components.get(stage), turn.reward.weighted.get(stage)
        if raw is not None:
            weight = weighted / raw if raw else 0.0
            parts.append(f"{stage} {raw:.3f} x {weight:.2g}" if raw else f"{stage} {raw:.3f}")
    candidates = f"  (best of {turn.candidates} candidate turns)" if turn.candidates > 1 else ""
    lines.append(f"  reward {turn.reward.total:.3f} = " + " + ".join(parts) + candidates)
    return "\n".join(lines)


class ChatSession:
    """One conversation with the policy: the customer's messages in, the agent's turns out.

    Args:
        replier: the run's :class:`~csrl.dialogue.serving.reply.Replier`.
        decoding: how each turn is chosen (changeable between turns).
    """

    def __init__(self, replier: Replier, decoding: Decoding | None = None):
        self.replier = replier
        self.decoding = decoding or Decoding()
        self.history: list[Turn] = []

    def say(self, text: str) -> AgentTurn:
        """The customer says ``text``; returns the agent's turn (kept in the history, with its search)."""
        if not text.strip():
            raise ValueError("say something: the message is empty")
        self.history.append(Turn(role="customer", text=text.strip()))
        (turn,) = self.replier.reply([self.history], self.decoding)
        self.history += turn.turns()
        return turn

    def reset(self) -> None:
        """Forget the conversation."""
        self.history = []

    def set_decoding(self, words: Sequence[str]) -> str:
        """``/decoding METHOD [N]``: the new decoding, described (a ``ValueError`` says what was wrong)."""
        if not words or words[0] not in METHODS:
            raise ValueError(f"/decoding METHOD [N]: METHOD is one of {', '.join(METHODS)}")
        n = self.decoding.n
        if len(words) > 1:
            if not words[1].isdigit():
                raise ValueError(f"/decoding {words[0]} N: N must be a whole number, not {words[1]!r}")
            n = int(words[1])
        self.decoding = dataclasses.replace(self.decoding, method=words[0], n=n)
        return describe(self.decoding)


def describe(decoding: Decoding) -> str:
    """A decoding in words.

    >>> describe(Decoding("beam", n=4, beam_width=2))
    'beam (n=4, width 2, temperature 1.0)'
    >>> describe(Decoding())
    'greedy'
    """
    if decoding.method == "greedy":
        return "greedy"
    width = f", width {decoding.beam_width}" if decoding.method == "beam" else ""
    n = f"n={decoding.n}{width}, " if decoding.method != "sampled" else ""
    return f"{decoding.method} ({n}temperature {decoding.temperature})"


def chat_loop(session: ChatSession, read: Callable[[str], str] = input, write: Callable[[str], None] = print) -> int:
    """Read customer messages and commands until ``/quit`` or end of input; write each agent turn."""
    stages = [name for name, weight in session.replier.reward.weights.items() if weight]
    write(f"csrl chat: {describe(session.decoding)}. {HELP}")
    while True:
        try:
            line = read("customer: ").strip()
        except EOFError:
            write("")
            return 0
        if not line:
            continue
        words = line.split()
        try:
            if words[0] in ("/quit", "/exit"):
                return 0
            if words[0] == "/reset":
                session.reset()
                write("(new conversation)")
            elif words[0] == "/decoding":
                write(f"(decoding: {session.set_decoding(words[1:])})")
            elif words[0] == "/help":
                write(HELP)
            elif line.startswith("/"):
                write(f"unknown command {words[0]!r}: {HELP}")
            else:
                write(render_turn(session.say(line), stages))
        except ValueError as err:
            write(f"error: {err}")


__all__ = ["HELP", "ChatSession", "chat_loop", "describe", "render_turn"]
