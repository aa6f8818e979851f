"""Search steps for SFT on logs that logged no knowledge-base lookups.

Text-only logs show the agent's answers but never the lookup behind them, so SFT on them alone teaches a
policy that never writes ``search:``: it must then invent facts, and the retrieval stage (half the reward)
can only credit replies grounded by chance. Where the KB supports a logged answer *and* a search the policy
can write from the dialogue finds that support, the example gets the lookup the agent would have made:

- the query is the customer's content words, newest message first (at most ``max_words``): a query the
  policy can copy from its context, not one that needs the answer to write;
- the results are what the environment returns for that query (the retriever's top ``k``), so the policy
  learns to read the results it will see at run time, not an oracle's;
- the step is added only when one of those results supports the answer: it holds at least ``min_coverage`` of
  the answer's content words. Elsewhere the agent answers without searching, as logged: the policy learns to
  search where searching helps. (The retriever's calibrated relevance was tried as the support test and
  rejected: fitted for a customer's words against documents, it rates most same-domain agent replies as
  relevant to each other, e.g. a weather report to "I can't know the weather". Requiring the answer's own
  document in the results, in a KB built from the answers, kept 75 of 1,119 answers on text-only STAR;
  coverage keeps 171, nearly all of them answers of the same kind.)

Logs with logged lookups keep exactly their own (STAR's SFT examples are unchanged).

Off by default (``SFTConfig.search_steps``): on text-only STAR (quick preset, the same reward models for both
runs, 400 held-out episodes each) 171 of 1,119 informative answers got a step, and the 4.3M-parameter policy
trained from scratch scored 0.340 per turn after SFT against 0.411 without them (PPO: 0.324 against 0.357); it
searched in under 2% of its PPO turns. The results block takes context a small policy needs for the dialogue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from csrl.data.schema import Conversation, Turn
from csrl.rewards.answer_kb import content_words, is_informative_answer


def search_query(customer_messages: Sequence[str], max_words: int = 8) -> str:
    """The customer's content words, newest message first, each once, at most ``max_words``.

    >>> search_query(["Hi, my card was stolen", "Can I block the card now?"])
    'block card now hi was stolen'
    """
    words: dict[str, None] = {}
    for message in reversed(customer_messages):
        for word in content_words(message):
            words.setdefault(word, None)
    return " ".join(list(words)[:max_words])


def coverage(answer: str, document: str) -> float:
    """Share of the answer's content words (each once) that the document holds; 0 for an answer without any.

    >>> coverage("Your card is blocked now", "We blocked the card")  # card, blocked of card, blocked, now
    0.6666666666666666
    """
    words = set(content_words(answer))
    return len(words & set(content_words(document))) / len(words) if words else 0.0


def with_search_steps(
    conversations: Sequence[Conversation],
    retriever,
    *,
    k: int = 3,
    min_coverage: float = 0.5,
    max_words: int = 8,
) -> tuple[list[Conversation], dict]:
    """Copies of ``conversations`` with a tool turn before each agent answer that a search finds support for.

    Args:
        conversations: logs without logged lookups (a conversation that has tool turns is left as it is).
        retriever: the fitted :class:`~csrl.rewards.search.retriever.HybridRetriever` the environment searches.
        k: documents a search returns (the environment's ``search_top_k``).
        min_coverage: share of the answer's content words a result must hold to support it.
        max_words: query length in words.

    Returns:
        The conversations and counts: ``answers`` (informative agent answers considered) and ``search_steps``
        (those whose query's results support them).
    """
    if k < 1:
        raise ValueError(f"k={k}: a search returns at least 1 document")
    candidates = []  # (conversation index, turn index, query, answer)
    for c, conversation in enumerate(conversations):
        if any(turn.role == "tool" for turn in conversation.turns):
            continue
        said: list[str] = []
        for t, turn in enumerate(conversation.turns):
            if turn.role == "customer":
                said.append(turn.text)
            elif turn.role == "agent" and said and is_informative_answer(turn.text):
                query = search_query(said, max_words)
                if query:
                    candidates.append((c, t, query, turn.text))
    counts = {"answers": len(candidates), "search_steps": 0}
    if not candidates or len(retriever) == 0:
        return list(conversations), counts
    found, _ = retriever.search_indices([query for _, _, query, _ in candidates], k=k)  # (A, k')
    steps: dict[int, dict[int, Turn]] = {}
    for a, (c, t, query, answer) in enumerate(candidates):
        results = tuple(retriever.documents[int(i)] for i in found[a])
        if max(coverage(answer, document.text) for document in results) >= min_coverage:
            steps.setdefault(c, {})[t] = Turn(role="tool", query=query, results=results)
            counts["search_steps"] += 1
    out = []
    for c, conversation in enumerate(conversations):
        if c not in steps:
            out.append(conversation)
            continue
        turns: list[Turn] = []
        for t, turn in enumerate(conversation.turns):
            if t in steps[c]:
                turns.append(steps[c][t])
            turns.append(turn)
        out.append(replace(conversation, turns=tuple(turns)))
    return out, counts


__all__ = ["coverage", "search_query", "with_search_steps"]
