"""The intent-understanding stage: did the agent turn serve what the customer wants?

Raw score (range ``[-1/3, 1]``, weight 0.3 by default, so +0.3 / −0.1 after weighting):

- the customer's intent is ``ctx.gold_intent`` where the logs know it, else the classifier's
  reading of the moment (:meth:`IntentClassifier.customer_proba`): the customer's messages (newest
  first), their last message and the agent's previous reply, which tells which of several
  requests is being served now;
- the turn's intent is ``ctx.declared_intent``: ``+1`` if it equals the customer's, else ``−1/3``;
- a turn that declares no intent gets the expected score under the classifier's distribution
  over the *reply's* intent: ``p·1 + (1 − p)·(−1/3)`` with ``p = P(reply has the customer's intent)``.

>>> intent_score("bank_fraud_report", "bank_fraud_report")
1.0
>>> round(intent_score("bank_fraud_report", "weather"), 4)
-0.3333
>>> expected_intent_score(0.25)
0.0

The classifier is two small torch heads over the shared :class:`~csrl.rewards.encoder.TextEncoder`
embeddings (the encoder pass is shared with the other stages, so scoring stays fast): a text head
trained on the logs' labelled customer and agent turns plus need texts (:func:`intent_examples`),
which reads replies, and a context head over the three moment texts the satisfaction stage embeds
too. Both are saved as safetensors + JSON (no pickle) and reload offline.
"""

from __future__ import annotations

import json
import re
import time
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
from csrl.rewards.heads import check_encoder, check_training_set, fit_head, fit_linear_softmax, subsample
from csrl.rewards.metrics import macro_f1

WRONG_INTENT = -1.0 / 3.0  # the design's raw score for a wrong intent (−0.1 after the 0.3 weight)
RIGHT_INTENT = 1.0
INTENT_WEIGHTS_FILE = "intent_head.safetensors"
INTENT_CONTEXT_WEIGHTS_FILE = "intent_context_head.safetensors"
INTENT_CONFIG_FILE = "intent_config.json"

# A need text made only of these words says nothing about the task (STAR: ~30% of dialogues open with "Hello").
_GREETING = re.compile(r"^(?:\W*(?:hello|hallo|hi|hey|hiya|good\s+(?:morning|afternoon|evening)|there)\W*)+$", re.I)


def intent_score(customer_intent: str | None, turn_intent: str | None) -> float:
    """``+1`` when the turn's intent is the customer's, else ``−1/3`` (also when either is unknown).

    >>> intent_score("a", "a"), round(intent_score("a", "b"), 4), round(intent_score("a", None), 4)
    (1.0, -0.3333, -0.3333)
    """
    if customer_intent is not None and customer_intent == turn_intent:
        return RIGHT_INTENT
    return WRONG_INTENT


def expected_intent_score(p_match: float) -> float:
    """Expected raw score when the reply has the customer's intent with probability ``p_match``.

    >>> [round(expected_intent_score(p), 4) for p in (0.0, 0.25, 0.5, 1.0)]
    [-0.3333, 0.0, 0.3333, 1.0]
    """
    if not 0.0 <= p_match <= 1.0:
        raise ValueError(f"p_match={p_match} is not a probability; pass a value in [0, 1]")
    return p_match * RIGHT_INTENT + (1.0 - p_match) * WRONG_INTENT


def is_greeting_only(text: str) -> bool:
    """True for need texts that carry no task ("Hello", "hi there!").

    >>> is_greeting_only("Hello!"), is_greeting_only("Hi, my card was stolen")
    (True, False)
    """
    return bool(_GREETING.match(text.strip())) or not text.strip()


# ---------------------------------------------------------------------------------------------- examples


class IntentExample(NamedTuple):
    """One labelled text. ``source`` is ``"customer"``, ``"agent"`` or ``"need"``."""

    text: str
    label: str
    source: str


def intent_examples(conversations: Sequence[Conversation]) -> list[IntentExample]:
    """Labelled texts from the logs.

    - every agent turn with text, labelled with its ``intent`` (else the conversation's);
    - every customer message, labelled with the intent of the agent turn that answers it (the
      next agent turn), else the conversation's;
    - the need text (``ctx.need_text()``) at every agent turn, labelled ``ctx.gold_intent``: what
      the text head reads for the customer's intent where there is no context head.

    Turns without any label are left out.

    >>> from csrl.data.schema import Conversation
    >>> conv = Conversation.from_dict({"id": "c", "intent": "weather", "turns": [
    ...     {"role": "customer", "text": "Will it rain?"},
    ...     {"role": "agent", "text": "Which city?", "intent": "weather"}]})
    >>> [(e.source, e.text, e.label) for e in intent_examples([conv])]  # doctest: +NORMALIZE_WHITESPACE
    [('customer', 'Will it rain?', 'weather'), ('agent', 'Which city?', 'weather'),
     ('need', 'Will it rain?', 'weather')]
    """
    examples: list[IntentExample] = []
    for conv in conversations:
        spoken = [t for t in conv.turns if t.role in ("customer", "agent")]
        for i, turn in enumerate(spoken):
            if not turn.text.strip():
                continue
            if turn.role == "agent":
                label = turn.intent or conv.intent
            else:
                answer = next((t for t in spoken[i + 1 :] if t.role == "agent"), None)
                label = (answer.intent if answer is not None else None) or conv.intent
            if label:
                examples.append(IntentExample(turn.text, label, turn.role))
        for ctx in contexts_from_conversation(conv):
            need = ctx.need_text()
            if need.strip() and ctx.gold_intent:
                examples.append(IntentExample(need, ctx.gold_intent, "need"))
    return examples


# ---------------------------------------------------------------------------------------------- model


class IntentHead(nn.Module):
    """Embedding ``(B, dim)`` -> logits ``(B, n_labels)``: linear (``hidden=0``) or one hidden layer."""

    def __init__(self, dim: int, n_labels: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_labels)
            )
        else:
            self.net = nn.Sequential(nn.Linear(dim, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of embeddings."""
        return self.net(x)


def moment_features(encoder: TextEncoder, contexts: Sequence[TurnContext]) -> torch.Tensor:
    """``(n, 3 * dim)``: the embeddings of each context's ``moment_texts()``, side by side."""
    e = encoder.encode(moment_columns(contexts))  # the satisfaction stage then finds these in the cache
    n = len(contexts)
    return torch.from_numpy(np.concatenate([e[:n], e[n : 2 * n], e[2 * n :]], axis=1))


class IntentClassifier:
    """Intent labels from text: the shared encoder's embeddings through small heads.

    Args:
        encoder: the shared :class:`TextEncoder`.
        head: a trained :class:`IntentHead` over one text's embedding (replies, messages, Banking77 queries).
        labels: the label of each output, in order.
        hidden: the heads' hidden width (0 = linear), kept for saving.
        context_head: an optional :class:`IntentHead` over :func:`moment_features` for the customer's
            intent at a turn; without it :meth:`customer_proba` reads the need text with ``head``.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        head: IntentHead,
        labels: Sequence[str],
        hidden: int,
        context_head: IntentHead | None = None,
    ):
        self.encoder = encoder
        self.head = head.eval()
        self.context_head = context_head.eval() if context_head is not None else None
        self.labels = list(labels)
        self.hidden = hidden
        self.index = {label: i for i, label in enumerate(self.labels)}

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), n_labels)`` probabilities; rows sum to 1."""
        return self.proba_from_embeddings(self.encoder.encode(list(texts)))

    def proba_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """The same as :meth:`predict_proba` from precomputed embeddings ``(n, dim)``."""
        return self._proba(self.head, torch.from_numpy(np.asarray(embeddings, dtype=np.float32)))

    def _proba(self, head: IntentHead, x: torch.Tensor) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        with torch.no_grad():
            return torch.softmax(head(x), dim=-1).numpy()

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable label of each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def customer_proba(self, contexts: Sequence[TurnContext]) -> np.ndarray:
        """``(n, n_labels)``: the customer's intent at each turn, from the context head (else the need text)."""
        contexts = list(contexts)
        if self.context_head is None:
            return self.predict_proba([ctx.need_text() for ctx in contexts])
        return self._proba(self.context_head, moment_features(self.encoder, contexts))

    def predict_customer(self, contexts: Sequence[TurnContext]) -> list[str]:
        """The customer's most probable intent at each turn."""
        return [self.labels[i] for i in self.customer_proba(contexts).argmax(axis=1)]

    def save(self, folder: str | Path) -> Path:
        """Write ``intent_head.safetensors``, the context head if any, and ``intent_config.json`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.head.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / INTENT_WEIGHTS_FILE))
        if self.context_head is not None:
            state = self.context_head.state_dict()
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / INTENT_CONTEXT_WEIGHTS_FILE))
        config = {
            "labels": self.labels,
            "encoder": self.encoder.name,
            "dim": self.encoder.dim,
            "hidden": self.hidden,
            "context_head": self.context_head is not None,
        }
        (folder / INTENT_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, encoder: TextEncoder) -> IntentClassifier:
        """Rebuild a saved classifier on ``encoder`` (which must be the one it was trained with)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / INTENT_CONFIG_FILE).is_file() or not (folder / INTENT_WEIGHTS_FILE).is_file():
            raise ValueError(
                f"{folder} holds no intent classifier: expected {INTENT_CONFIG_FILE} and {INTENT_WEIGHTS_FILE}"
            )
        config = json.loads((folder / INTENT_CONFIG_FILE).read_text())
        check_encoder(config, encoder, folder)
        head = IntentHead(config["dim"], len(config["labels"]), hidden=config["hidden"])
        head.load_state_dict(load_file(str(folder / INTENT_WEIGHTS_FILE)))
        context_head = None
        if config.get("context_head"):  # folders from before the context head read the need text alone
            if not (folder / INTENT_CONTEXT_WEIGHTS_FILE).is_file():
                raise ValueError(
                    f"{folder}: {INTENT_CONFIG_FILE} names a context head but {INTENT_CONTEXT_WEIGHTS_FILE} is missing"
                )
            context_head = IntentHead(3 * config["dim"], len(config["labels"]), hidden=config["hidden"])
            context_head.load_state_dict(load_file(str(folder / INTENT_CONTEXT_WEIGHTS_FILE)))
        return cls(encoder, head, config["labels"], config["hidden"], context_head)


# ---------------------------------------------------------------------------------------------- training


@dataclass
class IntentTrainConfig:
    """How the intent head is trained."""

    epochs: int = field(default=40, metadata={"help": "hidden heads: passes over the (subsampled) examples"})
    lr: float = field(default=1e-2, metadata={"help": "hidden heads: AdamW learning rate"})
    c: float = field(default=10.0, metadata={"help": "linear heads: inverse L2 strength of the logistic regression"})
    max_examples: int = field(default=8000, metadata={"help": "subsample to this many texts (embedding is the cost)"})
    seed: int = field(default=0, metadata={"help": "subsampling, initialisation and shuffling seed"})
    # On STAR need texts a linear head matched or beat a 256-wide MLP (0.816 vs 0.804 on 2,000 test turns).
    hidden: int = field(default=0, metadata={"help": "hidden width of the head; 0 for a linear head"})
    batch_size: int = field(default=256, metadata={"help": "examples per optimiser step"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}; train for at least 1 epoch")
        for name, default in (("lr", "1e-2"), ("c", "10")):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; must be > 0 (default {default})")
        if self.max_examples < 2:
            raise ValueError(f"max_examples={self.max_examples}; keep at least 2 examples")
        if self.hidden < 0:
            raise ValueError(f"hidden={self.hidden}; use 0 (linear head) or a positive width")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}; use >= 1")


def train_intent_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    encoder: TextEncoder,
    config: IntentTrainConfig | None = None,
) -> IntentClassifier:
    """Train an intent head on (text, label) pairs, subsampled to ``config.max_examples``.

    Raises:
        ValueError: mismatched lengths, an empty set or a single label.
    """
    config = config or IntentTrainConfig()
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    check_training_set(len(texts), len(labels), len(set(labels)))
    keep = subsample(len(texts), config.max_examples, config.seed)
    texts = [texts[i] for i in keep]
    labels = [labels[i] for i in keep]
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError("after subsampling only one label is left; raise max_examples")
    index = {name: i for i, name in enumerate(names)}
    x = torch.from_numpy(encoder.encode(texts))  # (N, dim)
    y = torch.tensor([index[label] for label in labels])  # (N,)
    head = _fitted_head(x, y, len(names), config)
    return IntentClassifier(encoder, head, names, config.hidden)


# ---------------------------------------------------------------------------------------------- reward


class IntentReward:
    """Reward component: ``+1`` if the turn serves the customer's intent, else ``−1/3``; range ``[−1/3, 1]``.

    See the module docstring for how each intent is found. A customer intent the classifier has
    no label for gives ``p = 0`` in the expected-score form (score ``−1/3``).
    """

    def __init__(self, classifier: IntentClassifier):
        self.classifier = classifier

    def score(self, contexts: Sequence[TurnContext]) -> list[float]:
        """One raw score per context, in ``[−1/3, 1]``."""
        contexts = list(contexts)
        customer = [ctx.gold_intent for ctx in contexts]
        unknown = [i for i, intent in enumerate(customer) if intent is None]
        if unknown:
            predicted = self.classifier.predict_customer([contexts[i] for i in unknown])
            for i, label in zip(unknown, predicted, strict=True):
                customer[i] = label
        undeclared = [i for i, ctx in enumerate(contexts) if ctx.declared_intent is None]
        scores = [intent_score(c, ctx.declared_intent) for c, ctx in zip(customer, contexts, strict=True)]
        if undeclared:
            proba = self.classifier.predict_proba([contexts[i].reply for i in undeclared])
            for row, i in zip(proba, undeclared, strict=True):
                j = self.classifier.index.get(customer[i])
                scores[i] = expected_intent_score(float(min(max(row[j], 0.0), 1.0)) if j is not None else 0.0)
        return scores


# ---------------------------------------------------------------------------------------------- evaluation


def _metrics(gold: list[str], predicted: list[str]) -> dict:
    accuracy = float(np.mean([g == p for g, p in zip(gold, predicted, strict=True)])) if gold else float("nan")
    return {"accuracy": round(accuracy, 4), "macro_f1": round(macro_f1(gold, predicted), 4), "n": len(gold)}


def _is_multi_task(conversation: Conversation) -> bool:
    """More than one task in one conversation (STAR: ~29% of dialogues, e.g. a hotel search then a booking)."""
    return len({t.intent for t in conversation.turns if t.intent} | {conversation.intent} - {None}) > 1


def evaluate_intent(
    classifier: IntentClassifier,
    conversations: Sequence[Conversation],
    *,
    max_turns: int | None = 2000,
    seed: int = 0,
) -> dict:
    """Held-out intent accuracy on what the reward classifies.

    The main numbers (``accuracy``, ``macro_f1``, ``n``) are :meth:`IntentClassifier.predict_customer`
    at each held-out agent turn, once the customer has said something beyond a greeting (a lone
    "Hello" names no task; ``all_turns`` includes those turns too); ``need_text_only`` is the text
    head on the need text alone, for comparison. Gold is the turn's label (``ctx.gold_intent``).
    ``single_task`` / ``multi_task`` split the main numbers by conversation: in a multi-task
    conversation the gold label is the sub-task the agent is serving *now*, which the customer's
    messages often do not determine ("Angela", "yes" after asking for two things), so that part
    is much harder by nature.
    ``agent_reply`` scores the classifier on the logged agent replies themselves (what the
    expected-score form uses for bots that declare no intent); many replies ("Could I get your
    name, please?") are shared by several tasks, so it is lower by nature.

    Args:
        classifier: the trained classifier.
        conversations: held-out conversations (e.g. the test split).
        max_turns: evaluate a seeded sample of at most this many agent turns (``None``: all).
        seed: the sampling seed.

    Returns:
        ``{"accuracy", "macro_f1", "n", "all_turns", "need_text_only", "single_task", "multi_task", "agent_reply",
        "seconds"}``,
        each sub-dict with its own accuracy, macro-F1 and n.
    """
    start = time.perf_counter()
    pairs = [
        (_is_multi_task(conv), ctx)
        for conv in conversations
        for ctx in contexts_from_conversation(conv)
        if ctx.gold_intent
    ]
    if not pairs:
        raise ValueError("no labelled agent turns to evaluate: pass held-out conversations with intent labels")
    if max_turns is not None:
        pairs = [pairs[i] for i in subsample(len(pairs), max_turns, seed)]
    multi = [m for m, _ in pairs]
    contexts = [ctx for _, ctx in pairs]
    needs = [ctx.need_text() for ctx in contexts]
    gold = [ctx.gold_intent for ctx in contexts]
    predicted = classifier.predict_customer(contexts)
    informative = [i for i, text in enumerate(needs) if not is_greeting_only(text)]
    result = _metrics([gold[i] for i in informative], [predicted[i] for i in informative])
    result["all_turns"] = _metrics(gold, predicted)
    need_only = classifier.predict([needs[i] for i in informative])
    result["need_text_only"] = _metrics([gold[i] for i in informative], need_only)
    for name, wanted in (("single_task", False), ("multi_task", True)):
        chosen = [i for i in informative if multi[i] is wanted]
        result[name] = _metrics([gold[i] for i in chosen], [predicted[i] for i in chosen])
    replies = [(ctx.reply, ctx.declared_intent) for ctx in contexts if ctx.reply.strip() and ctx.declared_intent]
    reply_predicted = classifier.predict([r for r, _ in replies])
    result["agent_reply"] = _metrics([g for _, g in replies], reply_predicted)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def train_intent_from_logs(
    conversations: Sequence[Conversation], encoder: TextEncoder, config: IntentTrainConfig | None = None
) -> IntentClassifier:
    """Train the text head on :func:`intent_examples` of ``conversations`` (the train split), then the context head."""
    config = config or IntentTrainConfig()
    examples = intent_examples(conversations)
    classifier = train_intent_classifier([e.text for e in examples], [e.label for e in examples], encoder, config)
    contexts = [ctx for conv in conversations for ctx in contexts_from_conversation(conv) if ctx.gold_intent]
    classifier.context_head = train_context_head(classifier, contexts, config)
    return classifier


def train_context_head(
    classifier: IntentClassifier, contexts: Sequence[TurnContext], config: IntentTrainConfig
) -> IntentHead:
    """A head over :func:`moment_features` -> ``ctx.gold_intent``, on up to ``config.max_examples`` contexts.

    On STAR's test split (quick preset) it reads the customer's intent at 0.892 against 0.816 for the
    text head on the need text (multi-task dialogues: 0.816 against 0.657), at no extra encoder cost
    when scoring. The previous reply carries most of the gain; a 256-wide hidden layer did not help.
    """
    contexts = [ctx for ctx in contexts if ctx.gold_intent in classifier.index]
    check_training_set(len(contexts), len(contexts), len({ctx.gold_intent for ctx in contexts}))
    keep = subsample(len(contexts), config.max_examples, config.seed)
    contexts = [contexts[i] for i in keep]
    x = moment_features(classifier.encoder, contexts)  # (N, 3 * dim)
    y = torch.tensor([classifier.index[ctx.gold_intent] for ctx in contexts])
    return _fitted_head(x, y, len(classifier.labels), config)


def _fitted_head(x: torch.Tensor, y: torch.Tensor, n_labels: int, config: IntentTrainConfig) -> IntentHead:
    """A linear head fitted as scikit-learn's logistic regression, or a hidden-layer head trained with AdamW."""
    torch.manual_seed(config.seed)
    head = IntentHead(x.shape[1], n_labels, hidden=config.hidden)
    if config.hidden == 0:
        fit_linear_softmax(head.net[0], x, y, config.c)
    else:
        fit_head(head, x, y, nn.CrossEntropyLoss(), config)
    return head.eval()


__all__ = [
    "IntentClassifier",
    "IntentExample",
    "IntentHead",
    "IntentReward",
    "IntentTrainConfig",
    "evaluate_intent",
    "expected_intent_score",
    "intent_examples",
    "intent_score",
    "moment_features",
    "train_context_head",
    "train_intent_classifier",
    "train_intent_from_logs",
]


if __name__ == "__main__":  # pragma: no cover - a manual measurement: python -m csrl.rewards.intent
    from csrl.data import load_corpus

    corpus = load_corpus("star")
    t0 = time.perf_counter()
    enc = TextEncoder()
    clf = train_intent_from_logs(corpus.split("train"), enc)
    train_s = time.perf_counter() - t0
    print(json.dumps({"train_seconds": round(train_s, 1), **evaluate_intent(clf, corpus.split("test"))}, indent=2))
