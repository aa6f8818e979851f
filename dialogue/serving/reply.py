"""The trained policy answering a conversation: its next agent turn, with the process reward's breakdown.

:class:`Replier` writes the turn as the environment would have it (``intent:`` / ``search:`` with the run's
KB results inserted / ``reply:``) and scores it with the run's composite reward. How the turn is chosen is a
:class:`Decoding`:

- ``greedy``: the most likely tokens (a deployed bot's answer; deterministic);
- ``sampled``: one sample at ``temperature`` (what PPO explores);
- ``best_of_n``: ``n`` candidate turns (the greedy one and ``n - 1`` samples), the one the composite scores highest
  (:func:`~.search.best_of_n`);
- ``beam``: a step-level beam over the process, scored by the composite at every step (:func:`~.search.step_beam`).

The composite is the verifier here, so it never sees a gold intent: at answer time nobody knows one, and the
intent stage predicts the customer's intent from the dialogue (as ``csrl score`` does without ``gold_intent``).
Used by ``csrl chat`` and ``POST /v1/reply``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from csrl.data.schema import KBDocument, Turn
from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.prompts import build_prompt
from csrl.dialogue.trainer.generation import GeneratedTurn, write_turns
from csrl.env.conversation_env import UNDECLARED_INTENT
from csrl.env.spaces import clean_chat_text
from csrl.env.turn_format import ParsedTurn, parse_agent_turn
from csrl.rewards.composite import RewardBreakdown
from csrl.rewards.context import TurnContext

METHODS = ("greedy", "sampled", "best_of_n", "beam")


@dataclass(frozen=True)
class Decoding:
    """How the next turn is chosen (see the module docstring).

    Attributes:
        method: one of :data:`METHODS`.
        n: ``best_of_n``: candidate turns (greedy and ``n - 1`` samples); ``beam``: samples drawn per kept partial
            turn and step.
        beam_width: ``beam``: partial turns kept per conversation after each step.
        temperature: sampling temperature of every method but ``greedy``.
        seed: seeds the sampling, so the same request gets the same answer.
    """

    method: str = field(default="greedy", metadata={"help": f"one of {', '.join(METHODS)}"})
    n: int = field(default=4, metadata={"help": "best_of_n: candidate turns (greedy + n-1 sampled); beam: samples"})
    beam_width: int = field(default=2, metadata={"help": "beam: partial turns kept per step"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (not used by greedy)"})
    seed: int = field(default=0, metadata={"help": "seeds the sampling: the same dialogue gets the same turn"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"decoding method {self.method!r}: expected one of {', '.join(METHODS)}")
        if not 1 <= self.n <= 64 or not 1 <= self.beam_width <= 16:
            raise ValueError(f"n={self.n}, beam_width={self.beam_width}: use 1 <= n <= 64 and 1 <= beam_width <= 16")
        if self.temperature <= 0 and self.method != "greedy":
            raise ValueError(f"temperature={self.temperature}: sampling needs a temperature > 0 (or method 'greedy')")


@dataclass
class AgentTurn:
    """The turn the replier chose, as the environment records it, and its reward.

    Attributes:
        intent: the declared intent (``None``: the turn declared none).
        search: the ``search:`` query (``None``: no search).
        documents: the knowledge-base results the search returned (empty without a search).
        reply: what the customer reads.
        text: the whole turn in the process format, results block included, up to where the turn ended.
        reward: the composite's breakdown of the turn (no gold intent, see the module docstring).
        candidates: complete turns the method wrote and scored to choose this one.
    """

    intent: str | None
    search: str | None
    documents: tuple[KBDocument, ...]
    reply: str
    text: str
    reward: RewardBreakdown
    candidates: int = 1
    problems: list[str] = field(default_factory=list)

    def turns(self) -> list[Turn]:
        """The turn as history entries (a tool turn if it searched, then the agent turn), as the environment adds."""
        tool = [Turn(role="tool", query=self.search, results=self.documents)] if self.search else []
        return [*tool, Turn(role="agent", text=self.reply, intent=self.intent)]


class Replier:
    """A trained policy, the run's knowledge base and its composite reward, answering conversations.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic` (eval mode).
        reward: the run's :class:`~csrl.rewards.composite.CompositeReward`.
        searcher: the KB search, ``search(queries, k) -> [[(document, score), ...], ...]`` (the run's retriever).
        policy_config: the run's generation settings (``max_new_tokens``, ``constrain_intent``, ...).
        search_top_k: documents a search returns (the run's ``EnvConfig.search_top_k``).
        max_observation_chars: characters of dialogue in the prompt (the run's ``EnvConfig``).
    """

    def __init__(self, policy, reward, searcher, *, policy_config: PolicyConfig, search_top_k: int,
                 max_observation_chars: int):  # fmt: skip
        self.policy = policy
        self.reward = reward
        self.searcher = searcher
        self.policy_config = policy_config
        self.search_top_k = search_top_k
        self.max_observation_chars = max_observation_chars

    def prompts(self, histories: Sequence[Sequence[Turn]]) -> list[str]:
        """Each dialogue as the policy's prompt."""
        return [build_prompt(h, self.max_observation_chars) for h in histories]

    def search(self, queries: dict[int, str]) -> dict[int, tuple[KBDocument, ...]]:
        """Row -> query in, row -> the KB's top documents out (one batched search; an empty query finds nothing)."""
        cleaned = {row: " ".join(query.split()) for row, query in queries.items()}
        asked = [row for row, query in cleaned.items() if query]
        hits = self.searcher.search([cleaned[row] for row in asked], self.search_top_k) if asked else []
        found = {row: tuple(doc for doc, _ in row_hits) for row, row_hits in zip(asked, hits, strict=True)}
        return {row: found.get(row, ()) for row in queries}

    def write(self, histories: Sequence[Sequence[Turn]], temperature: float, generator=None) -> list[GeneratedTurn]:
        """One turn per dialogue, written in two batched generations (see :func:`write_turns`)."""
        return write_turns(self.policy, self.prompts(histories), self.search, self.policy_config, temperature,
                           generator)  # fmt: skip

    def parse(self, action: str) -> ParsedTurn:
        """An agent turn's text parsed as the environment parses it."""
        return parse_agent_turn(clean_chat_text(action))

    def context(self, history: Sequence[Turn], parsed: ParsedTurn, documents) -> TurnContext:
        """The verifier's view of a (possibly partial) turn: no gold intent; knowledge only if it searched."""
        return TurnContext(
            history=tuple(history),
            reply=parsed.reply,
            declared_intent=parsed.intent or UNDECLARED_INTENT,
            knowledge=tuple(documents or ()) if parsed.search else None,
            search_query=parsed.search,
        )

    def finish(self, histories: Sequence[Sequence[Turn]], rows: Sequence[int], actions: Sequence[str],
               documents: Sequence) -> list[tuple[ParsedTurn, tuple, RewardBreakdown]]:  # fmt: skip
        """Parse and score complete turns (``rows[i]`` indexes ``histories``); a search without results runs now."""
        parsed = [self.parse(a) for a in actions]
        pairs = enumerate(zip(parsed, documents, strict=True))
        missing = {i: p.search for i, (p, d) in pairs if p.search and d is None}
        found = self.search(missing) if missing else {}
        documents = [found.get(i, d) or () for i, d in enumerate(documents)]
        contexts = [self.context(histories[r], p, d) for r, p, d in zip(rows, parsed, documents, strict=True)]
        breakdowns = self.reward.score(contexts) if contexts else []
        return list(zip(parsed, [tuple(d) for d in documents], breakdowns, strict=True))

    @torch.no_grad()
    def reply(self, histories: Sequence[Sequence[Turn]], decoding: Decoding | None = None) -> list[AgentTurn]:
        """The next agent turn of each dialogue (its turns so far, oldest first), chosen by ``decoding``."""
        from csrl.dialogue.serving.search import best_of_n, step_beam

        decoding = decoding or Decoding()
        histories = [tuple(h) for h in histories]
        for i, history in enumerate(histories):
            if not any(t.role == "customer" for t in history):
                raise ValueError(f"dialogue {i}: the customer has not said anything yet")
        generator = torch.Generator(device=self.policy.device).manual_seed(decoding.seed)
        if decoding.method == "best_of_n":
            return best_of_n(self, histories, decoding.n, decoding.temperature, generator)
        if decoding.method == "beam":
            return step_beam(self, histories, decoding.n, decoding.beam_width, decoding.temperature, generator)
        temperature = 0.0 if decoding.method == "greedy" else decoding.temperature
        written = self.write(histories, temperature, generator)
        scored = self.finish(histories, range(len(histories)), [w.action for w in written],
                             [w.documents for w in written])  # fmt: skip
        return [agent_turn(w.action, *s) for w, s in zip(written, scored, strict=True)]


def agent_turn(text: str, parsed: ParsedTurn, documents: tuple, breakdown: RewardBreakdown,
               candidates: int = 1) -> AgentTurn:  # fmt: skip
    """An :class:`AgentTurn` from a scored turn (see :meth:`Replier.finish`)."""
    return AgentTurn(intent=parsed.intent, search=parsed.search, documents=documents if parsed.search else (),
                     reply=parsed.reply, text=text, reward=breakdown, candidates=candidates,
                     problems=list(parsed.problems))  # fmt: skip


__all__ = ["METHODS", "AgentTurn", "Decoding", "Replier", "agent_turn"]
