"""A knowledge base made from the logs themselves, for logs that come with none.

What the human agents told customers is the company's knowledge in use. The informative agent
answers of the training split (not greetings or closings, not questions back to the customer, not
one-word acknowledgements) are de-duplicated into answer documents: exact repeats first (agents
reuse templates), then near-duplicates by cosine similarity of their embeddings, most frequent
phrasing first (leader clustering: each answer joins the first, more frequent, document within
``similarity`` of it, or starts its own). Each document keeps the phrasing agents used most and,
where the conversations have an intent (logged or discovered), the intent most of its answers served.

>>> is_informative_answer("Your card has been blocked and a new one is on its way.")
True
>>> [is_informative_answer(t) for t in ("Hello!", "Could I get your name?", "Thanks, goodbye.", "ok")]
[False, False, False, False]
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from csrl.data.schema import Conversation, KBDocument

MIN_CONTENT_WORDS = 4  # "Your order shipped." is an answer; "Sure, one moment." is not
_WORD = re.compile(r"[^\W_]+")
_SMALL_TALK = re.compile(
    r"^\W*(?:hi|hello|hey|good (?:morning|afternoon|evening)|thanks?|thank you|you're welcome|you are welcome|"
    r"bye|goodbye|have a (?:nice|great|good) (?:day|evening|one)|is there anything else|anything else|"
    r"no problem|my pleasure|one moment|sure|okay|ok)\b",
    re.IGNORECASE,
)
_STOPWORDS = frozenset(
    "a an and are as at be but by can could do for from have i if in is it me my of on or our so that the "
    "this to we will with you your yes no please just let".split()
)


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry content (lower case, stopwords left out).

    >>> content_words("Your card has been blocked.")
    ['card', 'has', 'been', 'blocked']
    """
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def is_informative_answer(text: str) -> bool:
    """An agent message that tells the customer something: not small talk, not a question back, not too short."""
    stripped = " ".join(text.split())
    if not stripped or stripped.endswith("?"):
        return False
    words = content_words(stripped)
    if len(words) < MIN_CONTENT_WORDS:
        return False
    # small talk that goes on ("Thanks for waiting, goodbye!") is still small talk; an answer that starts
    # politely ("Sure, your balance is $40 and ...") is not, so only short openers count
    return not (_SMALL_TALK.match(stripped) and len(words) < 2 * MIN_CONTENT_WORDS)


def _normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def answer_documents(
    conversations: Sequence[Conversation],
    encoder,
    *,
    similarity: float = 0.9,
    max_answers: int = 20000,
) -> list[KBDocument]:
    """The informative agent answers of ``conversations``, de-duplicated into KB documents.

    Args:
        conversations: the training split (never held-out conversations: the KB must not know them).
        encoder: the run's :class:`~csrl.rewards.encoder.TextEncoder`.
        similarity: cosine at or above which two answers are one document.
        max_answers: distinct answers embedded at most, the most frequent first (embedding is the cost).

    Returns:
        Documents ``answer-<hash>``, most frequent first; ``title`` is the intent (or ``"agent answer"``),
        ``intent`` the majority intent of the answers merged into it (None where the logs have none).

    Raises:
        ValueError: no informative agent answer in ``conversations``.
    """
    if not 0 < similarity <= 1:
        raise ValueError(f"similarity={similarity}: expected a cosine in (0, 1]")
    counts: Counter[str] = Counter()
    phrasing: dict[str, Counter[str]] = defaultdict(Counter)
    intents: dict[str, Counter[str]] = defaultdict(Counter)
    for conversation in conversations:
        for turn in conversation.turns:
            if turn.role != "agent" or not is_informative_answer(turn.text):
                continue
            key = _normalized(turn.text)
            counts[key] += 1
            phrasing[key][" ".join(turn.text.split())] += 1
            intent = turn.intent or conversation.intent
            if intent:
                intents[key][intent] += 1
    if not counts:
        raise ValueError(
            "the logs hold no informative agent answer to build a knowledge base from: pass --kb with your "
            "help-centre articles or FAQ"
        )
    keys = [key for key, _ in counts.most_common(max_answers)]
    texts = [phrasing[key].most_common(1)[0][0] for key in keys]
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)  # (N, dim), unit rows
    leaders: list[int] = []
    members: dict[int, list[int]] = {}
    leader_vectors = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    for i, vector in enumerate(vectors):
        if leaders:
            scores = leader_vectors @ vector  # (L,)
            best = int(np.argmax(scores))
            if scores[best] >= similarity:
                members[leaders[best]].append(i)
                continue
        leaders.append(i)
        members[i] = [i]
        leader_vectors = np.vstack([leader_vectors, vector[None, :]])
    documents = []
    for leader in leaders:
        served: Counter[str] = Counter()
        for i in members[leader]:
            served.update(intents.get(keys[i], {}))
        intent = served.most_common(1)[0][0] if served else None
        digest = hashlib.sha256(texts[leader].encode("utf-8")).hexdigest()[:12]
        documents.append(KBDocument(f"answer-{digest}", texts[leader], intent or "agent answer", intent))
    return documents
