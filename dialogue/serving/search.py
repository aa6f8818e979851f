r"""Test-time search over the policy's turns, with the process reward as the verifier.

Best-of-N and step-level beam search with a process reward model are how reasoning models buy quality with
compute at answer time (Lightman et al., 2023, "Let's Verify Step by Step"; Snell et al., 2024, "Scaling LLM
Test-Time Compute Optimally"). An agent turn here is a process too -- intent, then search, then reply -- and the
composite scores each step:

- :func:`best_of_n`: the greedy turn and ``n - 1`` whole turns sampled per dialogue in one batch, the best-scored
  one kept;
- :func:`step_beam`: ``n`` samples of the first step (the ``intent:`` line) per dialogue; the ``width`` best
  (scored with the reply still empty: only the intent stage, and the retrieval stage once a search ran, tell
  them apart) each get ``n`` samples of the next step (a ``search:`` line, whose results the KB returns, or a
  turn ended without one); the ``width`` best searches each get ``n`` replies; of every complete turn written,
  the composite's best is the answer. Partial turns are deduplicated, so a confident policy spends less.

Every step of every dialogue is one batched generation, and every scoring one composite call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from csrl.dialogue.models.policy import left_pad
from csrl.dialogue.models.prompts import SEARCH_PAUSE, TURN_END_STOPS, cut_turn_end
from csrl.dialogue.trainer.generation import prompt_ids, results_ids, turn_budget

# the first step of a turn: its intent line, newline included
INTENT_LINE = re.compile(r"^intent:[^\n]*\n")


def best_of_n(replier, histories: Sequence, n: int, temperature: float, generator=None) -> list:
    """Per dialogue, the greedy turn and ``n - 1`` sampled ones; returns the best-scored :class:`~.reply.AgentTurn`.

    The greedy turn is a candidate so that the verifier's choice never scores below what greedy decoding answers.
    """
    from csrl.dialogue.serving.reply import agent_turn

    rows = list(range(len(histories))) + [r for r in range(len(histories)) for _ in range(n - 1)]
    written = replier.write(list(histories), 0.0)
    if n > 1:
        written += replier.write([histories[r] for r in rows[len(histories) :]], temperature, generator)
    scored = replier.finish(histories, rows, [w.action for w in written], [w.documents for w in written])
    best = {}
    for r, w, s in zip(rows, written, scored, strict=True):
        if r not in best or s[2].total > best[r][1][2].total:
            best[r] = (w, s)
    return [agent_turn(best[r][0].action, *best[r][1], candidates=n) for r in range(len(histories))]


@dataclass
class _Partial:
    """A turn being written: its tokens so far (the policy's and any inserted results), and where it stands."""

    row: int  # the dialogue
    tokens: list[int]
    state: str  # "start", "intent" (after the intent line), "search" (after the search line and results), "done"
    documents: tuple | None = None


def _state(text: str, reason: str, after: str) -> str:
    """Where a generated piece left the turn: ``search`` (paused after a search line), ``intent`` or ``done``."""
    if reason == "stop" and cut_turn_end(text) == text:
        if SEARCH_PAUSE.search(text):
            return "search"
        if after == "start" and INTENT_LINE.fullmatch(text):
            return "intent"
    return "done"


def step_beam(replier, histories: Sequence, n: int, width: int, temperature: float, generator=None) -> list:
    """The step-level beam of the module docstring; returns the best :class:`~.reply.AgentTurn` of each dialogue."""
    from csrl.dialogue.models.constraints import IntentConstraint
    from csrl.dialogue.serving.reply import agent_turn

    policy, config = replier.policy, replier.policy_config
    tokenizer = policy.tokenizer
    eos = tokenizer.eos_token_id
    _, results_cap = turn_budget(policy.context_length, config)
    prompts = prompt_ids(policy, replier.prompts(histories), config)
    constraint = IntentConstraint(tokenizer, policy.intents) if config.constrain_intent and policy.intents else None
    sample = dict(temperature=temperature, top_k=config.top_k, stop_on_repetition=config.stop_on_repetition)
    decode = lambda ids: tokenizer.decode([t for t in ids if t != eos])  # noqa: E731
    pending: dict[str, list[_Partial]] = {"start": [_Partial(r, [], "start") for r in range(len(histories))],
                                          "intent": [], "search": [], "done": []}  # fmt: skip
    for state in ("start", "intent", "search"):  # each step's children are in a later state (or done)
        frontier = pending[state] if state == "start" else _best_partials(replier, histories, pending[state], width,
                                                                           decode)  # fmt: skip
        if not frontier:
            continue
        grow = [p for p in frontier for _ in range(n)]
        # intent and search lines share the first generation's budget; the reply has one of its own
        budget = config.max_new_tokens - (0 if state == "search" else max(len(p.tokens) for p in grow))
        generated = policy.generate(
            *left_pad([prompts[p.row] + p.tokens for p in grow], tokenizer.pad_token_id, policy.device),
            max_new_tokens=max(budget, 1), generator=generator, constraint=constraint if state == "start" else None,
            stop=[INTENT_LINE, SEARCH_PAUSE, *TURN_END_STOPS] if state == "start" else [SEARCH_PAUSE, *TURN_END_STOPS],
            **sample,
        )  # fmt: skip
        seen = set()
        children = []
        pieces = zip(grow, generated.tokens, generated.texts, generated.stop_reasons, strict=True)
        for p, tokens, text, reason in pieces:
            if (p.row, tuple(p.tokens + tokens)) in seen:  # the same partial turn twice: expand it once
                continue
            seen.add((p.row, tuple(p.tokens + tokens)))
            child_state = "done" if state == "search" else _state(text, reason, state)
            children.append(_Partial(p.row, p.tokens + tokens, child_state, p.documents))
        searching = [c for c in children if c.state == "search"]
        found = replier.search({i: replier.parse(decode(c.tokens)).search or "" for i, c in enumerate(searching)})
        for i, c in enumerate(searching):  # the KB's results go in as the environment's tokens
            c.documents = found[i]
            c.tokens = c.tokens + results_ids(tokenizer, found[i], config, results_cap)
        for c in children:
            pending[c.state].append(c)
    return _best_complete(replier, histories, pending["done"], decode, agent_turn)


def _best_partials(replier, histories, partials: list[_Partial], width: int, decode) -> list[_Partial]:
    """Per dialogue, the ``width`` partial turns the composite scores highest with their reply still empty."""
    if not partials:
        return []
    scored = replier.finish(histories, [p.row for p in partials], [decode(p.tokens) for p in partials],
                            [p.documents for p in partials])  # fmt: skip
    ranked = sorted(zip(partials, scored, strict=True), key=lambda pair: -pair[1][2].total)
    kept: dict[int, int] = {}
    best = []
    for partial, _ in ranked:
        if kept.get(partial.row, 0) < width:
            kept[partial.row] = kept.get(partial.row, 0) + 1
            best.append(partial)
    return best


def _best_complete(replier, histories, done: list[_Partial], decode, agent_turn) -> list:
    texts = [decode(p.tokens) for p in done]
    scored = replier.finish(histories, [p.row for p in done], [cut_turn_end(t) for t in texts],
                            [p.documents for p in done])  # fmt: skip
    best: dict[int, int] = {}
    for i, p in enumerate(done):
        if p.row not in best or scored[i][2].total > scored[best[p.row]][2].total:
            best[p.row] = i
    count = {r: sum(p.row == r for p in done) for r in best}
    return [agent_turn(cut_turn_end(texts[best[r]]), *scored[best[r]], candidates=count[r]) for r in sorted(best)]


__all__ = ["INTENT_LINE", "best_of_n", "step_beam"]
