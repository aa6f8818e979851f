"""``ConversationEnv``: a customer-service conversation from the logs as a Gymnasium environment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from csrl.data.schema import Conversation, KBDocument, Turn
from csrl.env.simulators import ReactiveCustomer, ReplayCustomer, Slot, conversation_slots
from csrl.env.spaces import ChatText, clean_chat_text
from csrl.env.turn_format import ParsedTurn, format_agent_turn, parse_agent_turn, render_dialogue
from csrl.rewards.composite import CompositeReward, RewardBreakdown
from csrl.rewards.context import TurnContext

UNDECLARED_INTENT = "unknown"  # what a policy turn without an `intent:` line declares (scored as wrong)


class Searcher(Protocol):
    """The knowledge-base search the environment runs for a ``search:`` line."""

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[KBDocument, float]]]:
        """Top ``k`` (document, relevance) pairs for each query."""
        ...


@dataclass
class EnvConfig:
    """Settings of one conversation environment."""

    simulator: str = field(default="replay", metadata={"help": "'replay' (logged customer) or 'reactive'"})
    search_top_k: int = field(default=3, metadata={"help": "documents a search returns to the policy"})
    initial_sentiment: float = field(default=0.5, metadata={"help": "customer sentiment in [0, 1] at reset"})
    sentiment_rate: float = field(
        default=0.5, metadata={"help": "sentiment <- (1 - rate) * sentiment + rate * satisfaction, each turn"}
    )
    leave_threshold: float = field(
        default=0.25, metadata={"help": "reactive customers leave when sentiment falls below this"}
    )
    max_observation_chars: int = field(default=4096, metadata={"help": "dialogue text kept in the observation"})
    max_action_chars: int = field(default=2048, metadata={"help": "longest agent turn text accepted as is"})

    def __post_init__(self):
        if self.simulator not in ("replay", "reactive"):
            raise ValueError(f"simulator={self.simulator!r}: expected 'replay' or 'reactive'")
        if self.search_top_k < 1:
            raise ValueError(f"search_top_k={self.search_top_k}: a search must return at least 1 document")
        for name in ("initial_sentiment", "sentiment_rate", "leave_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name}={value}: expected a number in [0, 1]")
        if self.max_observation_chars < 256 or self.max_action_chars < 64:
            raise ValueError("max_observation_chars must be >= 256 and max_action_chars >= 64")


class ConversationEnv(gym.Env):
    """A customer-service conversation drawn from chat logs; the agent is the policy.

    ## Description
    Each episode replays the opening of a logged conversation. At every step the agent writes one
    turn in the process format (``intent:`` / optional ``search:`` / ``reply:``); the environment
    runs the search against the knowledge base, scores the turn with the multi-stage composite
    reward, and the simulated customer answers (replayed from the log, or reacting to the reply).

    ## Action Space
    ``ChatText(max_action_chars)``: the agent turn as text. Any string is accepted; malformed
    turns are parsed as far as they go and scored (badly), never rejected. A ``results:`` block in
    the action is ignored: the environment inserts search results itself (see :meth:`search`).

    ## Observation Space
    ``Dict(dialogue=ChatText(max_observation_chars), sentiment=Box(0, 1, (1,)))``: the dialogue so
    far as ``role: text`` lines (oldest lines dropped to fit), and the customer's sentiment.

    ## Rewards
    The composite reward of the turn: by default 0.3 × intent (+1 / −1/3) + 0.5 × knowledge
    relevance [0, 1] + 0.2 × predicted satisfaction [0, 1], so in [−0.1, 1]. Each stage's raw and
    weighted score is in ``info["reward_components"]`` / ``info["reward_weighted"]``.

    ## Episode End
    ``terminated``: the logged conversation has no further agent turn (replay), the customer's
    reaction ended its logged conversation (reactive), or the customer left because sentiment
    fell below ``leave_threshold`` (reactive). ``truncated``: the turn limit set at registration
    (``max_episode_steps``), applied by Gymnasium's ``TimeLimit`` wrapper.

    ## Arguments
    - ``conversations``: logged conversations to draw episodes from.
    - ``reward``: the :class:`~csrl.rewards.composite.CompositeReward` that scores agent turns.
    - ``searcher``: knowledge-base search with ``search(queries, k)``, e.g. the hybrid retriever.
    - ``config``: :class:`EnvConfig`.
    - ``customer``: a customer simulator; default per ``config.simulator`` (the reactive one needs
      ``encoder``).
    - ``encoder``: the shared sentence encoder, for the reactive customer.
    - ``render_mode``: ``"ansi"`` returns the transcript; ``"human"`` prints it.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        conversations: Sequence[Conversation],
        reward: CompositeReward,
        searcher: Searcher,
        config: EnvConfig | None = None,
        *,
        customer: ReplayCustomer | ReactiveCustomer | None = None,
        encoder=None,
        render_mode: str | None = None,
    ):
        self.config = config or EnvConfig()
        self.conversations = [c for c in conversations if conversation_slots(c)]
        if not self.conversations:
            raise ValueError("ConversationEnv needs at least one conversation with an agent turn")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: expected one of {self.metadata['render_modes']} or None")
        self.reward = reward
        self.searcher = searcher
        self.render_mode = render_mode
        if customer is None:
            if self.config.simulator == "reactive":
                if encoder is None:
                    raise ValueError("the reactive customer needs the shared sentence encoder: pass encoder=")
                customer = ReactiveCustomer(self.conversations, encoder)
            else:
                customer = ReplayCustomer()
        self.customer = customer
        self.observation_space = spaces.Dict(
            {
                "dialogue": ChatText(self.config.max_observation_chars),
                "sentiment": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
            }
        )
        self.action_space = ChatText(self.config.max_action_chars)
        self._conversation: Conversation | None = None
        self._slots: list[Slot] = []
        self._history: list[Turn] = []
        self._slot_index = 0
        self._sentiment = self.config.initial_sentiment
        self._done = True
        self._search_cache: dict[str, tuple[KBDocument, ...]] = {}

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a logged conversation: ``options={"conversation_id": id}`` picks one, else a random draw."""
        super().reset(seed=seed)
        options = options or {}
        if "conversation_id" in options:
            matches = [c for c in self.conversations if c.id == options["conversation_id"]]
            if not matches:
                raise ValueError(f"no conversation with id {options['conversation_id']!r} in this environment")
            self._conversation = matches[0]
        else:
            self._conversation = self.conversations[int(self.np_random.integers(len(self.conversations)))]
        self._slots = conversation_slots(self._conversation)
        self._slot_index = 0
        self._history = list(self._slots[0].customer_turns)
        self._sentiment = self.config.initial_sentiment
        self._search_cache = {}
        self._done = False
        return self._observation(), self._info()

    def step(self, action: str):
        """Score the agent turn ``action``, let the customer answer, and return the next observation."""
        context, parsed, documents = self.prepare_turn(action)
        breakdown = self.reward.score([context])[0]
        return self.finish_turn(parsed, documents, breakdown)

    def render(self):
        """The transcript so far (``ansi``), or print it (``human``)."""
        text = render_dialogue(self._history)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # -- the two halves of a step (batched scoring across environments uses them) -------------

    def search(self, query: str) -> tuple[KBDocument, ...]:
        """Run a knowledge-base search; the same query in one episode returns the same documents."""
        query = " ".join(query.split())
        if query not in self._search_cache:
            hits = self.searcher.search([query], self.config.search_top_k)[0] if query else []
            self._search_cache[query] = tuple(doc for doc, _ in hits)
        return self._search_cache[query]

    def prepare_turn(self, action: str) -> tuple[TurnContext, ParsedTurn, tuple[KBDocument, ...] | None]:
        """Parse the agent turn and build what the reward scores (the documents the policy saw)."""
        if self._done:
            raise RuntimeError("the episode has ended: call reset() before step()")
        if not isinstance(action, str):
            action = "" if action is None else str(action)
        parsed = parse_agent_turn(clean_chat_text(action[: self.config.max_action_chars]))
        documents = self.search(parsed.search) if parsed.search else None
        context = TurnContext(
            history=tuple(self._history),
            reply=parsed.reply,
            declared_intent=parsed.intent or UNDECLARED_INTENT,
            knowledge=documents,
            gold_intent=self.current_intent,
            search_query=parsed.search,
        )
        return context, parsed, documents

    def finish_turn(self, parsed: ParsedTurn, documents: tuple[KBDocument, ...] | None, breakdown: RewardBreakdown):
        """Record the scored turn, update sentiment, let the customer answer; returns the step tuple."""
        if parsed.search:
            self._history.append(Turn(role="tool", query=parsed.search, results=documents or ()))
        self._history.append(Turn(role="agent", text=parsed.reply, intent=parsed.intent))
        satisfaction = breakdown.components.get("satisfaction", self._sentiment)
        rate = self.config.sentiment_rate
        self._sentiment = float(np.clip((1 - rate) * self._sentiment + rate * satisfaction, 0.0, 1.0))
        response = self.customer.respond(
            self._conversation, self._slots, self._slot_index, parsed.reply, self.np_random
        )
        self._history.extend(response.turns)
        self._slot_index += 1
        left = self.config.simulator == "reactive" and self._sentiment < self.config.leave_threshold
        terminated = response.ends_conversation or left
        self._done = terminated
        info = self._info()
        info.update(
            reward_components=dict(breakdown.components),
            reward_weighted=dict(breakdown.weighted),
            parsed_turn={"intent": parsed.intent, "search": parsed.search, "reply": parsed.reply},
            format_problems=list(parsed.problems),
            search_results=[d.id for d in documents] if documents else [],
            customer_left=left,
        )
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(breakdown.total), terminated, False, info

    # -- helpers -------------------------------------------------------------------------------

    @property
    def current_intent(self) -> str | None:
        """The customer's intent at this turn (the logged label of the slot being served)."""
        return self._slots[min(self._slot_index, len(self._slots) - 1)].intent

    def logged_action(self) -> str | None:
        """The logged agent turn here in the process format (the human reference); ``None`` past the log."""
        if self._slot_index >= len(self._slots):
            return None
        slot = self._slots[self._slot_index]
        return format_agent_turn(slot.intent, slot.reply, search=slot.search)

    @property
    def history(self) -> tuple[Turn, ...]:
        """The dialogue so far."""
        return tuple(self._history)

    def _observation(self) -> dict:
        text = clean_chat_text(render_dialogue(self._history, self.config.max_observation_chars))
        return {"dialogue": text, "sentiment": np.array([self._sentiment], dtype=np.float32)}

    def _info(self) -> dict:
        return {
            "conversation_id": self._conversation.id if self._conversation else None,
            "intent": self.current_intent if self._slots else None,
            "turn": self._slot_index,
            "sentiment": self._sentiment,
        }
