"""The answer / satisfaction stage: P(the customer reacts positively to this reply, *at this moment*), in ``[0, 1]``.

The classifier (:class:`SatisfactionClassifier`, :func:`pair_features`) reads four embeddings of
the shared encoder and a few hand-made numbers:

- ``n = emb(ctx.need_text())`` (all the customer's messages, newest first: the intent and
  retrieval stages embed the same text, so it is free in the composite), ``w = emb(last customer
  message)`` (short), ``p = emb(the agent's previous reply)`` (short, ``""`` at the first reply;
  in a rollout it was embedded when the turn before was scored) and ``v = emb(reply)`` (embedded
  by the other stages too);
- vector features ``[n, w, p, v, v*w, |v−w|, v*p, v*n]`` and ``cos(v, w)``, ``cos(v, p)``, ``cos(v, n)``;
- :func:`context_scalars` (no encoder): the reply's largest word-set Jaccard with an earlier agent
  reply and whether it repeats one exactly (saying again what was said is a wrong moment), its
  Jaccard with the last customer message (a parrot), the number of customer messages and of
  earlier agent replies (clipped at ``POSITION_CAP`` and divided by it: a closing "anything
  else?" at the second turn is a wrong moment), whether the agent has not spoken yet, and the
  reply's length in words (clipped at 50, /50), the share of its words (3+ letters) that no
  earlier customer or agent message used (a reply from later brings facts not said yet), the share
  of the last customer message's words it takes up, the number of searches so far (clipped at 5,
  /5) and whether the agent searched since its last reply (results are due);

-> MLP (one hidden GELU layer) -> sigmoid, trained with binary cross-entropy plus a pairwise term
(``ranking_weight``): each logged good reply must outscore its synthetic negative in the same context
(on STAR, weight 3 moved the held-out ``integrity.same_conversation`` from 0.802 to 0.818 and the AUC
from 0.879 to 0.886 with everything else fixed). Saved folders carry ``"format": 2`` and the scalar
names; :meth:`SatisfactionClassifier.load` refuses other formats (the earlier ``[u, v, u*v, |u−v|]``
over ``recent_text``) with a ``ValueError``.

How training labels are made (:func:`satisfaction_examples`), for each logged agent turn with text:

1. **Explicit rating.** If the customer turn that follows carries a ``rating`` (the customer's
   satisfaction with the agent turn before it): ``>= 4`` -> 1, ``<= 2`` -> 0, ``3`` -> skipped.
2. **The customer's next message** (:func:`reaction_label`): a complaint or frustration
   ("that's wrong", "I already told you", "useless", ...) -> 0; the customer repeating their
   previous message (same words, at least 3 of them) -> 0; thanks or praise ("thanks", "great",
   "perfect", ...) -> 1. Complaints are checked first, so "thanks for nothing" is 0.
3. **A neutral next message** (the customer simply goes on: "yes", a name, a date) -> 1 when the
   conversation's outcome is ``satisfied``, else skipped (an unhappy conversation does not make
   every turn of it bad, and a neutral answer says nothing more).
4. **No next customer message** (the conversation ends after this turn): 1 if the outcome is
   ``satisfied`` (or, when satisfaction is unknown, ``completed``), 0 if it is not (a disconnect
   or an unhappy ending); skipped when the logs have no outcome.
5. **Synthetic negatives** (label 0), one per logged example, in the same context, so that the
   model learns that a bad reply makes a customer unhappy (the logs hold few unhappy turns). The
   kind is drawn with ``SYNTHETIC_WEIGHTS``: the reply of a turn from a conversation with another
   intent (0.1); another reply of the same conversation from *earlier* (0.25; it is in the
   history already) or from *later* (0.4; e.g. the closing line at the start) — the wrong
   moment, 65% of the negatives, taking a sibling from the other side when one side has none;
   a generic reply ("ok", "thanks", "", 0.1); the customer's own last message parroted back
   (0.15). A kind with no candidate falls back to a generic reply. Seeded.

On STAR's train split (4,789 conversations, 42,673 agent turns; no per-turn ratings; outcomes
mostly satisfied) this gives, with ``seed=0`` (``python -m csrl.rewards.satisfaction`` prints them):

- logged: 41,095 examples, 40,435 positive (next message thanks/praise 7,024; neutral next message
  in a satisfied conversation 28,945; ended satisfied 4,466) and 660 negative (complaint 381,
  repeat 47, disconnect / unhappy ending 232); skipped 1,578 (neutral next message in a
  conversation that was not satisfied);
- synthetic negatives: 41,095 (same conversation earlier 10,949 and later 15,722, other intent
  4,136, generic 4,208, parrot 6,080; "generic" includes the fallbacks when a kind found no
  candidate).

So most positive labels mean "the conversation went on and ended well", and most negatives are
synthetic: the stage mostly learns *is this a fitting reply here*, with the logged complaints,
repeats and disconnects as the real unhappy signal. The keyword rules are noisy on STAR, whose
customers were asked to act out emotions about their situation ("this is frustrating" is often
about the situation, not the agent).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from csrl.data.schema import Conversation
from csrl.rewards.context import TurnContext, contexts_from_conversation, moment_columns
from csrl.rewards.encoder import TextEncoder
from csrl.rewards.intent import _check_encoder, fit_head, macro_f1, subsample

WEIGHTS_FILE = "satisfaction_head.safetensors"
CONFIG_FILE = "satisfaction_config.json"
GENERIC_REPLIES = ("ok", "thanks", "", "Okay.", "Thank you.", "Sure.", "I see.", "Hello.")
SYNTHETIC_KINDS = ("other_intent", "same_conversation_earlier", "same_conversation_later", "generic", "parrot")
SYNTHETIC_WEIGHTS = (0.1, 0.25, 0.4, 0.1, 0.15)  # P(kind) of each synthetic negative; wrong moments are half
FORMAT = 2  # the saved format: 1 (no "format" key) read [emb(recent_text), emb(reply)] and is refused
POSITION_CAP = 10  # customer/agent message counts are clipped here and divided by it

# Reactions to the agent's last reply. Complaints are checked before thanks ("thanks for nothing").
_COMPLAINT = re.compile(
    r"\b(?:that'?s (?:not|wrong)|that is (?:not|wrong)|not what i|wrong|incorrect|not (?:right|correct|helpful)"
    r"|didn'?t (?:ask|say|help)|i (?:already|just) (?:told|said|gave)|i said|you (?:don'?t|didn'?t|aren'?t) "
    r"(?:understand|listen)|useless|terrible|awful|horrible|ridiculous|stupid|frustrat\w*|annoy\w*|angry|upset"
    r"|unacceptable|waste of|makes no sense|doesn'?t (?:help|make sense)|not helping|are you (?:a bot|even)"
    r"|thanks for nothing|speak to (?:a|your) (?:human|manager|supervisor)|what\?{2,})",
    re.I,
)
_THANKS = re.compile(
    r"\b(?:thanks?|thank you|thx|ty|cheers|great|perfect|awesome|excellent|wonderful|fantastic|brilliant"
    r"|appreciate\w*|helpful|amazing|good job|nice|lovely|that'?s all i need\w*|that helps)\b",
    re.I,
)
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def reaction_label(next_message: str, previous_message: str | None = None) -> tuple[int | None, str]:
    """Label an agent turn from the customer's next message: ``(1 | 0 | None, reason)``.

    >>> reaction_label("Thanks, that's great!")
    (1, 'thanks')
    >>> reaction_label("That's wrong, I already told you my name")
    (0, 'complaint')
    >>> reaction_label("I want to book a table for two", "I want to book a table for two!")
    (0, 'repeat')
    >>> reaction_label("Yes please")
    (None, 'neutral')
    """
    if _COMPLAINT.search(next_message):
        return 0, "complaint"
    if previous_message is not None:
        now, before = _words(next_message), _words(previous_message)
        # Saying the same thing again means the reply did not land; short answers ("yes") repeat innocently.
        if len(before) >= 3 and len(now & before) / len(now | before) >= 0.8:
            return 0, "repeat"
    if _THANKS.search(next_message):
        return 1, "thanks"
    return None, "neutral"


def rating_label(rating: int) -> int | None:
    """A 1–5 rating as a label: ``>= 4`` -> 1, ``<= 2`` -> 0, ``3`` -> ``None`` (skipped).

    >>> [rating_label(r) for r in (1, 2, 3, 4, 5)]
    [0, 0, None, 1, 1]
    """
    if not 1 <= rating <= 5:
        raise ValueError(f"rating={rating} is outside 1..5")
    return 1 if rating >= 4 else 0 if rating <= 2 else None


# ---------------------------------------------------------------------------------------------- examples


class SatisfactionExample(NamedTuple):
    """A (context, reply) pair with its label; ``source`` says how the label was made.

    ``context`` is the logged turn's context (its own ``reply`` is the logged one); ``reply`` is the
    reply being labelled (the logged one, or a synthetic negative).
    """

    context: TurnContext
    reply: str
    label: int
    source: str


def logged_label(conversation: Conversation, agent_index: int) -> tuple[int | None, str]:
    """The label of the agent turn at ``conversation.turns[agent_index]`` from the log's own signals.

    See the module docstring, steps 1–4. Returns ``(None, reason)`` for a skipped turn.
    """
    turns = conversation.turns
    following = [t for t in turns[agent_index + 1 :] if t.role == "customer"]
    before = [t for t in turns[:agent_index] if t.role == "customer"]
    outcome = conversation.outcome
    if following:
        reaction = following[0]
        if reaction.rating is not None:
            label = rating_label(reaction.rating)
            return label, "rating" if label is not None else "rating_3"
        label, reason = reaction_label(reaction.text, before[-1].text if before else None)
        if label is not None:
            return label, reason
        if outcome is not None and outcome.satisfied:
            return 1, "neutral_satisfied"
        return None, "neutral"
    ended_well = None
    if outcome is not None:
        ended_well = outcome.satisfied if outcome.satisfied is not None else outcome.completed
    if ended_well is None:
        return None, "ended_unknown"
    return (1, "ended_satisfied") if ended_well else (0, "disconnect")


def satisfaction_examples(
    conversations: Sequence[Conversation],
    seed: int = 0,
    *,
    max_contexts: int | None = None,
    synthetic: bool = True,
) -> list[SatisfactionExample]:
    """Labelled (recent_text, reply, label) examples from logs, plus synthetic negatives.

    Args:
        conversations: the logs (e.g. the train split).
        seed: seeds the context sample and the synthetic negatives.
        max_contexts: keep a seeded sample of at most this many labelled agent turns (embedding
            the contexts is the cost); ``None`` keeps all.
        synthetic: add one synthetic negative per logged example (module docstring, step 5).

    Returns:
        Logged examples first, then the synthetic ones.
    """
    rng = np.random.default_rng(seed)
    logged: list[tuple[int, TurnContext, int, str]] = []  # (conversation index, context, label, source)
    per_conversation: list[list[TurnContext]] = []
    for ci, conv in enumerate(conversations):
        contexts = iter(contexts_from_conversation(conv))
        kept = []
        for ti, turn in enumerate(conv.turns):
            if turn.role != "agent":
                continue
            ctx = next(contexts)
            if not ctx.reply.strip():
                continue
            kept.append(ctx)
            label, source = logged_label(conv, ti)
            if label is not None:
                logged.append((ci, ctx, label, source))
        per_conversation.append(kept)
    if max_contexts is not None:
        logged = [logged[i] for i in subsample(len(logged), max_contexts, seed)]
    examples = [SatisfactionExample(ctx, ctx.reply, label, source) for _, ctx, label, source in logged]
    if not synthetic:
        return examples
    pool = [(ci, ctx) for ci, kept in enumerate(per_conversation) for ctx in kept]
    for ci, ctx, _, _ in logged:
        reply, kind = _synthetic_reply(ci, ctx, conversations, per_conversation, pool, rng)
        examples.append(SatisfactionExample(ctx, reply, 0, kind))
    return examples


def _synthetic_reply(ci, ctx, conversations, per_conversation, pool, rng) -> tuple[str, str]:
    """A bad reply for ``ctx``: a kind drawn by ``SYNTHETIC_WEIGHTS``, falling back to a generic reply.

    A wrong-moment kind with no sibling on its side (earlier / later) takes one from the other side.
    """
    kind = SYNTHETIC_KINDS[int(rng.choice(len(SYNTHETIC_KINDS), p=SYNTHETIC_WEIGHTS))]
    intent = ctx.gold_intent or conversations[ci].intent
    if kind == "other_intent":
        for _ in range(20):
            oc, other = pool[int(rng.integers(len(pool)))]
            other_intent = other.gold_intent or conversations[oc].intent
            if other_intent != intent and other.reply != ctx.reply:
                return other.reply, kind
    elif kind.startswith("same_conversation"):
        kept = per_conversation[ci]
        here = next(i for i, c in enumerate(kept) if c is ctx)
        earlier = [c.reply for c in kept[:here] if c.reply != ctx.reply]
        later = [c.reply for c in kept[here + 1 :] if c.reply != ctx.reply]
        sides = [("same_conversation_earlier", earlier), ("same_conversation_later", later)]
        if kind == "same_conversation_later":
            sides.reverse()
        for side, siblings in sides:
            if siblings:
                return siblings[int(rng.integers(len(siblings)))], side
    elif kind == "parrot":
        said = ctx.customer_messages()
        if said and said[-1] != ctx.reply:
            return said[-1], kind
    return GENERIC_REPLIES[int(rng.integers(len(GENERIC_REPLIES)))], "generic"


def ranking_pairs(examples: Sequence[SatisfactionExample]) -> list[tuple[int, int]]:
    """``(logged positive, synthetic negative)`` index pairs that share a context: the same moment, two replies.

    >>> ctx = TurnContext((), "Your table is booked.")
    >>> ranking_pairs([SatisfactionExample(ctx, ctx.reply, 1, "next_thanks"),
    ...                SatisfactionExample(ctx, "ok", 0, "generic")])
    [(0, 1)]
    """
    positive = {id(e.context): i for i, e in enumerate(examples) if e.label == 1 and e.source not in SYNTHETIC_KINDS}
    return [
        (positive[id(e.context)], j)
        for j, e in enumerate(examples)
        if e.source in SYNTHETIC_KINDS and id(e.context) in positive
    ]


def label_counts(examples: Sequence[SatisfactionExample]) -> dict:
    """``{"total", "positive", "negative", "by_source": {source: n}}`` for documentation and logs."""
    labels = Counter(e.label for e in examples)
    return {
        "total": len(examples),
        "positive": labels.get(1, 0),
        "negative": labels.get(0, 0),
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
    }


# ---------------------------------------------------------------------------------------------- model


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


SCALAR_NAMES = (
    "repeat_max",  # max word-set Jaccard of the reply with each earlier agent reply (0 when none)
    "repeat_exact",  # 1 if the reply equals an earlier agent reply (case and spaces ignored)
    "parrot",  # word-set Jaccard of the reply with the last customer message
    "customer_position",  # customer messages so far, min(n, POSITION_CAP) / POSITION_CAP
    "agent_position",  # earlier agent replies, min(n, POSITION_CAP) / POSITION_CAP
    "first_reply",  # 1 if the agent has not spoken yet
    "reply_length",  # reply words, min(n, 50) / 50
    "novel_words",  # share of the reply's words (3+ letters) that no earlier customer/agent message used
    "answers_last",  # share of the last customer message's words (3+ letters) that the reply uses
    "searches",  # tool turns so far, min(n, 5) / 5
    "just_searched",  # 1 if a tool turn came after the last agent reply (results are due)
)


def context_scalars(ctx: TurnContext, reply: str) -> list[float]:
    """The hand-made features of ``reply`` at ``ctx`` (no encoder), in ``SCALAR_NAMES`` order.

    >>> from csrl.data.schema import Turn
    >>> ctx = TurnContext((Turn("customer", "hi"), Turn("agent", "What is your name?"), Turn("customer", "Sam")), "")
    >>> context_scalars(ctx, "what is your  name?")
    [1.0, 1.0, 0.0, 0.2, 0.1, 0.0, 0.08, 0.0, 0.0, 0.0, 0.0]
    """
    words = _words(reply)
    earlier = ctx.previous_agent_replies()
    normal = " ".join(reply.lower().split())
    said = ctx.customer_messages()
    seen = set().union(*(_words(t.text) for t in ctx.history if t.role in ("customer", "agent")))
    long_words = {x for x in words if len(x) >= 3}
    last = {x for x in _words(said[-1]) if len(x) >= 3} if said else set()
    roles = [t.role for t in ctx.history]
    last_agent = max((i for i, r in enumerate(roles) if r == "agent"), default=-1)
    return [
        max((_jaccard(words, _words(r)) for r in earlier), default=0.0),
        float(any(" ".join(r.lower().split()) == normal for r in earlier)),
        _jaccard(words, _words(said[-1])) if said else 0.0,
        min(len(said), POSITION_CAP) / POSITION_CAP,
        min(len(earlier), POSITION_CAP) / POSITION_CAP,
        float(not earlier),
        min(len(reply.split()), 50) / 50,
        len(long_words - seen) / len(long_words) if long_words else 0.0,
        len(last & long_words) / len(last) if last else 0.0,
        min(roles.count("tool"), 5) / 5,
        float("tool" in roles[last_agent + 1 :]),
    ]


def feature_dim(dim: int) -> int:
    """Width of :func:`pair_features` for encoder width ``dim``."""
    return 8 * dim + 3 + len(SCALAR_NAMES)


class SatisfactionHead(nn.Module):
    """:func:`pair_features` ``(B, feature_dim(dim))`` -> one logit ``(B,)``."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim(dim), hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of pair features."""
        return self.net(features).squeeze(-1)


def pair_features(
    n: np.ndarray, w: np.ndarray, p: np.ndarray, v: np.ndarray, scalars: np.ndarray
) -> torch.Tensor:
    """``[n, w, p, v, v*w, |v−w|, v*p, v*n, cos(v, w), cos(v, p), cos(v, n), scalars]``, rows ``(B, ·)``.

    ``n``, ``w``, ``p``, ``v``: unit embeddings of the need text, the last customer message, the
    agent's previous reply (of ``""`` when none) and the reply; ``scalars``: :func:`context_scalars`
    rows ``(B, len(SCALAR_NAMES))``.
    """
    n_t, w_t, p_t, v_t = (torch.from_numpy(np.asarray(a, np.float32)) for a in (n, w, p, v))
    s_t = torch.from_numpy(np.asarray(scalars, np.float32)).reshape(len(v_t), len(SCALAR_NAMES))
    cosines = [(v_t * x).sum(-1, keepdim=True) for x in (w_t, p_t, n_t)]
    return torch.cat([n_t, w_t, p_t, v_t, v_t * w_t, (v_t - w_t).abs(), v_t * p_t, v_t * n_t, *cosines, s_t], dim=-1)


class SatisfactionClassifier:
    """P(the customer reacts positively) to a reply at this moment of the dialogue.

    Args:
        encoder: the shared :class:`TextEncoder`.
        head: a trained :class:`SatisfactionHead`.
        hidden: the head's hidden width, kept for saving.
    """

    def __init__(self, encoder: TextEncoder, head: SatisfactionHead, hidden: int):
        self.encoder = encoder
        self.head = head.eval()
        self.hidden = hidden

    def features(self, contexts: Sequence[TurnContext], replies: Sequence[str] | None = None) -> torch.Tensor:
        """:func:`pair_features` of each reply (default: each context's own) in its context.

        One encoder call embeds the need texts (shared with the intent and retrieval stages), the
        last customer messages, the agent's previous replies (each scored, so cached, at the turn
        before in a rollout) and the replies.
        """
        contexts = list(contexts)
        replies = [c.reply for c in contexts] if replies is None else list(replies)
        if isinstance(replies, str):
            raise TypeError("replies is a list of texts, not a single string")
        if len(contexts) != len(replies):
            raise ValueError(f"got {len(contexts)} contexts but {len(replies)} replies; pass one reply per context")
        k = len(contexts)
        if not k:
            return torch.zeros(0, feature_dim(self.encoder.dim))
        e = self.encoder.encode(moment_columns(contexts) + replies)  # needs, last messages, previous replies, replies
        scalars = np.array([context_scalars(c, r) for c, r in zip(contexts, replies, strict=True)], np.float32)
        return pair_features(e[:k], e[k : 2 * k], e[2 * k : 3 * k], e[3 * k :], scalars)

    def predict_proba(self, contexts: Sequence[TurnContext], replies: Sequence[str] | None = None) -> np.ndarray:
        """``(n,)`` probabilities that the customer reacts positively to each reply (default: ``ctx.reply``)."""
        if isinstance(contexts, (str, TurnContext)):
            raise TypeError("predict_proba takes a list of TurnContexts")
        if replies is not None and len(contexts) != len(replies):
            raise ValueError(f"got {len(contexts)} contexts but {len(replies)} replies; pass one reply per context")
        if not len(contexts):
            return np.zeros(0, dtype=np.float32)
        features = self.features(contexts, replies)
        with torch.no_grad():
            return torch.sigmoid(self.head(features)).numpy()

    def save(self, folder: str | Path) -> Path:
        """Write ``satisfaction_head.safetensors`` and ``satisfaction_config.json`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(folder / WEIGHTS_FILE))
        config = {
            "format": FORMAT,
            "encoder": self.encoder.name,
            "dim": self.encoder.dim,
            "hidden": self.hidden,
            "scalars": list(SCALAR_NAMES),
            "position_cap": POSITION_CAP,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, encoder: TextEncoder) -> SatisfactionClassifier:
        """Rebuild a saved classifier on ``encoder`` (which must be the one it was trained with).

        Raises:
            ValueError: no classifier in ``folder``, another encoder, or an older feature format.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise ValueError(f"{folder} holds no satisfaction classifier: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
        config = json.loads((folder / CONFIG_FILE).read_text())
        found = config.get("format", 1)
        if found != FORMAT or config.get("scalars") != list(SCALAR_NAMES) or config.get("position_cap") != POSITION_CAP:
            raise ValueError(
                f"{folder} holds a satisfaction classifier of format {found} (features "
                f"{config.get('scalars')}), this code reads format {FORMAT} (features {list(SCALAR_NAMES)}): "
                "retrain it (delete the folder, or train into a new run)"
            )
        _check_encoder(config, encoder, folder)
        head = SatisfactionHead(config["dim"], hidden=config["hidden"])
        head.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return cls(encoder, head, config["hidden"])


# ---------------------------------------------------------------------------------------------- training


@dataclass
class SatisfactionTrainConfig:
    """How the satisfaction head is trained."""

    epochs: int = field(default=30, metadata={"help": "passes over the (subsampled) examples"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    max_examples: int = field(default=8000, metadata={"help": "subsample to this many pairs (embedding is the cost)"})
    seed: int = field(default=0, metadata={"help": "subsampling, initialisation and shuffling seed"})
    hidden: int = field(default=256, metadata={"help": "hidden width of the MLP"})
    batch_size: int = field(default=256, metadata={"help": "examples per optimiser step"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    ranking_weight: float = field(
        default=3.0,
        metadata={"help": "weight of the pairwise loss: a logged good reply must outscore its synthetic negative"},
    )

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}; train for at least 1 epoch")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}; the learning rate must be > 0 (default 1e-3)")
        if self.max_examples < 2:
            raise ValueError(f"max_examples={self.max_examples}; keep at least 2 examples")
        if self.hidden < 1:
            raise ValueError(f"hidden={self.hidden}; the MLP needs a positive width")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}; use >= 1")
        if self.ranking_weight < 0:
            raise ValueError(f"ranking_weight={self.ranking_weight}; use >= 0 (0: no pairwise loss)")


def train_satisfaction_classifier(
    examples: Sequence[SatisfactionExample],
    encoder: TextEncoder,
    config: SatisfactionTrainConfig | None = None,
) -> SatisfactionClassifier:
    """Train the satisfaction head on examples from :func:`satisfaction_examples` (subsampled to ``max_examples``).

    Raises:
        ValueError: an empty set, labels other than 0/1, or only one label.
    """
    config = config or SatisfactionTrainConfig()
    examples = list(examples)
    if not examples:
        raise ValueError("the training set is empty: pass examples from satisfaction_examples(train conversations)")
    bad = sorted({e.label for e in examples} - {0, 1})
    if bad:
        raise ValueError(f"labels must be 0 or 1, got {bad}")
    if len({e.label for e in examples}) < 2:
        raise ValueError(
            f"all {len(examples)} examples have label {examples[0].label}; the classifier needs both 0 and 1"
        )
    examples = [examples[i] for i in subsample(len(examples), config.max_examples, config.seed)]
    torch.manual_seed(config.seed)
    head = SatisfactionHead(encoder.dim, hidden=config.hidden)
    classifier = SatisfactionClassifier(encoder, head, config.hidden)
    x = classifier.features([e.context for e in examples], [e.reply for e in examples])
    y = torch.tensor([float(e.label) for e in examples])  # (N,)
    # BCE learns P(positive); the pairwise term sharpens what the integrity check asks of the composite:
    # the logged reply above a wrong-moment / off-topic one *in the same context*
    pairs = torch.tensor(ranking_pairs(examples), dtype=torch.long).reshape(-1, 2)  # (P, 2)
    fit_head(head, x, y, nn.BCEWithLogitsLoss(), config, ranking_pairs=pairs, ranking_weight=config.ranking_weight)
    classifier.head = head.eval()
    return classifier


def train_satisfaction_from_logs(
    conversations: Sequence[Conversation],
    encoder: TextEncoder,
    config: SatisfactionTrainConfig | None = None,
    *,
    max_contexts: int | None = 4000,
) -> SatisfactionClassifier:
    """Train on :func:`satisfaction_examples` of ``conversations`` (e.g. the train split).

    ``max_contexts`` caps the logged turns (each adds one synthetic negative): embedding the
    contexts is the cost (~4,000 contexts take about a minute on 2 cores).
    """
    config = config or SatisfactionTrainConfig()
    examples = satisfaction_examples(conversations, config.seed, max_contexts=max_contexts)
    return train_satisfaction_classifier(examples, encoder, config)


# ---------------------------------------------------------------------------------------------- reward


class SatisfactionReward:
    """Reward component: P(the customer reacts positively) in ``[0, 1]`` to the reply at this moment."""

    def __init__(self, classifier: SatisfactionClassifier):
        self.classifier = classifier

    def score(self, contexts: Sequence[TurnContext]) -> list[float]:
        """One probability per context."""
        contexts = list(contexts)
        proba = self.classifier.predict_proba(contexts)
        return [float(p) for p in proba]


# ---------------------------------------------------------------------------------------------- evaluation


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (P(a positive outscores a negative), ties half); NaN with one class.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def evaluate_satisfaction(
    classifier: SatisfactionClassifier,
    conversations: Sequence[Conversation],
    *,
    max_contexts: int | None = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict:
    """Held-out metrics on examples made exactly as for training from ``conversations``.

    Returns:
        ``{"auc", "macro_f1", "n"}`` over logged + synthetic examples, plus ``"logged"`` (accuracy,
        AUC, n, positives on the logged, non-synthetic labels alone), ``"by_source"`` (accuracy per
        label source) and ``"seconds"``.
    """
    start = time.perf_counter()
    examples = satisfaction_examples(conversations, seed, max_contexts=max_contexts)
    if not examples:
        raise ValueError("no labelled agent turns to evaluate: pass held-out conversations with outcomes or ratings")
    proba = classifier.predict_proba([e.context for e in examples], [e.reply for e in examples])
    labels = np.array([e.label for e in examples])
    predicted = (proba >= threshold).astype(int)
    synthetic = np.array([e.source in SYNTHETIC_KINDS for e in examples])
    logged = ~synthetic
    by_source = {}
    for source in sorted({e.source for e in examples}):
        mask = np.array([e.source == source for e in examples])
        by_source[source] = {
            "accuracy": round(float((predicted[mask] == labels[mask]).mean()), 4),
            "n": int(mask.sum()),
        }
    return {
        "auc": round(roc_auc(labels, proba), 4),
        "macro_f1": round(macro_f1(labels.tolist(), predicted.tolist()), 4),
        "n": len(examples),
        "logged": {
            "accuracy": round(float((predicted[logged] == labels[logged]).mean()), 4),
            "auc": round(roc_auc(labels[logged], proba[logged]), 4),
            "n": int(logged.sum()),
            "positive": int(labels[logged].sum()),
        },
        "by_source": by_source,
        "seconds": round(time.perf_counter() - start, 1),
    }


__all__ = [
    "SatisfactionClassifier",
    "SatisfactionExample",
    "SatisfactionHead",
    "SatisfactionReward",
    "SatisfactionTrainConfig",
    "evaluate_satisfaction",
    "logged_label",
    "rating_label",
    "reaction_label",
    "roc_auc",
    "satisfaction_examples",
    "train_satisfaction_classifier",
    "train_satisfaction_from_logs",
]


if __name__ == "__main__":  # pragma: no cover - a manual measurement: python -m csrl.rewards.satisfaction
    from csrl.data import load_corpus

    corpus = load_corpus("star")
    print(json.dumps(label_counts(satisfaction_examples(corpus.split("train"), 0)), indent=2))
