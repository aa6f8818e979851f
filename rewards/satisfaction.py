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

Training labels (:func:`~csrl.rewards.satisfaction_labels.satisfaction_examples`: logged ratings,
reactions and outcomes, plus synthetic negatives in the same context) are made in
:mod:`csrl.rewards.satisfaction_labels`, whose docstring gives the rules and their counts on STAR.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from csrl.data.schema import Conversation
from csrl.rewards.context import TurnContext, contexts_from_conversation, moment_columns
from csrl.rewards.encoder import TextEncoder
from csrl.rewards.heads import check_encoder, fit_head, subsample
from csrl.rewards.metrics import macro_f1, roc_auc
from csrl.rewards.satisfaction_labels import (
    BROKEN_KINDS,
    SYNTHETIC_KINDS,
    SatisfactionExample,
    ranking_pairs,
    satisfaction_examples,
    word_set,
)

SATISFACTION_WEIGHTS_FILE = "satisfaction_head.safetensors"
SATISFACTION_CONFIG_FILE = "satisfaction_config.json"
FORMAT = 2  # the saved format: 1 (no "format" key) read [emb(recent_text), emb(reply)] and is refused
POSITION_CAP = 10  # customer/agent message counts are clipped here and divided by it


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
    words = word_set(reply)
    earlier = ctx.previous_agent_replies()
    normal = " ".join(reply.lower().split())
    said = ctx.customer_messages()
    seen = set().union(*(word_set(t.text) for t in ctx.history if t.role in ("customer", "agent")))
    long_words = {x for x in words if len(x) >= 3}
    last = {x for x in word_set(said[-1]) if len(x) >= 3} if said else set()
    roles = [t.role for t in ctx.history]
    last_agent = max((i for i, r in enumerate(roles) if r == "agent"), default=-1)
    return [
        max((_jaccard(words, word_set(r)) for r in earlier), default=0.0),
        float(any(" ".join(r.lower().split()) == normal for r in earlier)),
        _jaccard(words, word_set(said[-1])) if said else 0.0,
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


def pair_features(n: np.ndarray, w: np.ndarray, p: np.ndarray, v: np.ndarray, scalars: np.ndarray) -> torch.Tensor:
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
        state = self.head.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / SATISFACTION_WEIGHTS_FILE))
        config = {
            "format": FORMAT,
            "encoder": self.encoder.name,
            "dim": self.encoder.dim,
            "hidden": self.hidden,
            "scalars": list(SCALAR_NAMES),
            "position_cap": POSITION_CAP,
        }
        (folder / SATISFACTION_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, encoder: TextEncoder) -> SatisfactionClassifier:
        """Rebuild a saved classifier on ``encoder`` (which must be the one it was trained with).

        Raises:
            ValueError: no classifier in ``folder``, another encoder, or an older feature format.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / SATISFACTION_CONFIG_FILE).is_file() or not (folder / SATISFACTION_WEIGHTS_FILE).is_file():
            raise ValueError(
                f"{folder} holds no satisfaction classifier: "
                f"expected {SATISFACTION_CONFIG_FILE} and {SATISFACTION_WEIGHTS_FILE}"
            )
        config = json.loads((folder / SATISFACTION_CONFIG_FILE).read_text())
        found = config.get("format", 1)
        if found != FORMAT or config.get("scalars") != list(SCALAR_NAMES) or config.get("position_cap") != POSITION_CAP:
            raise ValueError(
                f"{folder} holds a satisfaction classifier of format {found} (features "
                f"{config.get('scalars')}), this code reads format {FORMAT} (features {list(SCALAR_NAMES)}): "
                "retrain it (delete the folder, or train into a new run)"
            )
        check_encoder(config, encoder, folder)
        head = SatisfactionHead(config["dim"], hidden=config["hidden"])
        head.load_state_dict(load_file(str(folder / SATISFACTION_WEIGHTS_FILE)))
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


def evaluate_satisfaction(
    classifier: SatisfactionClassifier,
    conversations: Sequence[Conversation],
    *,
    max_contexts: int | None = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    broken: bool = False,
) -> dict:
    """Held-out metrics on examples made exactly as for training from ``conversations``.

    ``broken``: with the rude and garbled negatives too, as
    :func:`~csrl.rewards.satisfaction_labels.satisfaction_examples` makes them.

    Returns:
        ``{"auc", "macro_f1", "n"}`` over logged + synthetic examples, plus ``"logged"`` (accuracy,
        AUC, n, positives on the logged, non-synthetic labels alone), ``"by_source"`` (accuracy per
        label source) and ``"seconds"``.
    """
    start = time.perf_counter()
    examples = satisfaction_examples(conversations, seed, max_contexts=max_contexts, broken=broken)
    if not examples:
        raise ValueError("no labelled agent turns to evaluate: pass held-out conversations with outcomes or ratings")
    proba = classifier.predict_proba([e.context for e in examples], [e.reply for e in examples])
    labels = np.array([e.label for e in examples])
    predicted = (proba >= threshold).astype(int)
    synthetic = np.array([e.source in SYNTHETIC_KINDS + BROKEN_KINDS for e in examples])
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


def evaluate_on_ratings(classifier: SatisfactionClassifier, conversations: Sequence[Conversation]) -> dict | None:
    """The model against the held-out *logged ratings* alone: AUC of dissatisfied (rating <= 2) vs the rest.

    Every agent turn whose next customer message carries a rating is scored in its logged context (the turn
    the training labels give that rating to); the AUC is that of ``1 - P(satisfied)`` for the dissatisfied.
    No synthetic negatives, no reaction heuristics: the figure a user with rated logs can trust.

    Returns:
        ``{"auc", "n", "dissatisfied", "ratings"}`` (``ratings``: turns per rating), or ``None`` when the
        conversations hold no rated turn or only one side (all dissatisfied or none).
    """
    contexts, ratings = [], []
    for conversation in conversations:
        agent_contexts = iter(contexts_from_conversation(conversation))
        for i, turn in enumerate(conversation.turns):
            if turn.role != "agent":
                continue
            context = next(agent_contexts)
            reaction = next((t for t in conversation.turns[i + 1 :] if t.role == "customer"), None)
            if reaction is not None and reaction.rating is not None:
                contexts.append(context)
                ratings.append(reaction.rating)
    dissatisfied = np.array([r <= 2 for r in ratings], dtype=int)
    if not ratings or dissatisfied.min() == dissatisfied.max():
        return None
    proba = classifier.predict_proba(contexts)
    return {
        "auc": round(roc_auc(dissatisfied, 1.0 - proba), 4),
        "n": len(ratings),
        "dissatisfied": int(dissatisfied.sum()),
        "ratings": {str(r): ratings.count(r) for r in sorted(set(ratings))},
    }


__all__ = [
    "SCALAR_NAMES",
    "SatisfactionClassifier",
    "SatisfactionHead",
    "SatisfactionReward",
    "SatisfactionTrainConfig",
    "context_scalars",
    "evaluate_on_ratings",
    "evaluate_satisfaction",
    "feature_dim",
    "pair_features",
    "train_satisfaction_classifier",
    "train_satisfaction_from_logs",
]
