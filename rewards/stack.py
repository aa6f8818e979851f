"""The trained reward of a run: encoder, KB retriever, intent and satisfaction models, and their composite.

``build_reward_stack`` trains what a folder lacks and saves it; ``load_reward_stack`` reopens a
folder offline. A folder is self-contained (scoring needs nothing else)::

    rewards/
      reward_config.json     RewardConfig (weights, encoder)
      knowledge_base.jsonl   the KB the retriever indexes (ids resolve against it)
      retriever/             KB embeddings, FAISS index, BM25 settings, relevance calibration
      retrieval/             the retrieval stage's need -> document calibration
      intent/                intent head (safetensors) + labels
      satisfaction/          satisfaction head (safetensors)
      metrics.json           held-out metrics: intent.*, satisfaction.*, retrieval.*, integrity.*
      DONE                   written last: the folder is complete

Each piece is written once; a run killed while training the satisfaction model keeps its retriever
and intent model and trains only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from csrl.data import Corpus, KBDocument, load_knowledge_base, write_jsonl
from csrl.data.files import DONE, is_done, mark_done, update_json
from csrl.rewards.composite import CompositeReward
from csrl.rewards.config import RewardConfig, RewardTrainingConfig
from csrl.rewards.encoder import TextEncoder
from csrl.rewards.integrity import integrity_check
from csrl.rewards.intent import (
    IntentClassifier,
    IntentReward,
    IntentTrainConfig,
    evaluate_intent,
    train_intent_from_logs,
)
from csrl.rewards.retrieval import RetrievalReward
from csrl.rewards.rules import FormatReward, LengthReward, RepetitionReward
from csrl.rewards.satisfaction import (
    SatisfactionClassifier,
    SatisfactionReward,
    SatisfactionTrainConfig,
    evaluate_on_ratings,
    evaluate_satisfaction,
    train_satisfaction_classifier,
)
from csrl.rewards.satisfaction_labels import PRESUMED_GOOD, label_counts, satisfaction_examples
from csrl.rewards.search.retriever import HybridRetriever, answer_supported_searches, logged_searches, retrieval_recall

INFERRED_FILE = "inferred.json"  # what the logs lacked and how it was inferred (see csrl.dialogue.pipeline.inference)


@dataclass
class RewardStack:
    """Everything that scores a turn, loaded once and shared (one encoder, one embedding cache)."""

    config: RewardConfig
    encoder: TextEncoder
    documents: list[KBDocument]
    retriever: HybridRetriever
    intent: IntentClassifier
    satisfaction: SatisfactionClassifier
    reward: CompositeReward

    @property
    def intents(self) -> list[str]:
        """The intent labels the reward knows."""
        return list(self.intent.labels)


def _compose(config, retrieval: RetrievalReward, intent: IntentClassifier, satisfaction) -> CompositeReward:
    components = {
        "intent": IntentReward(intent),
        "retrieval": retrieval,
        "satisfaction": SatisfactionReward(satisfaction),
        "format": FormatReward(),
        "length": LengthReward(),
        "repetition": RepetitionReward(),
    }
    gates = {"retrieval": "satisfaction"} if config.retrieval_fit_gate else None
    return CompositeReward(components, config.weights, gates=gates)


def reward_encoder(config: RewardConfig) -> TextEncoder:
    """The sentence encoder ``config`` names, at its sequence length and precision."""
    return TextEncoder(
        config.encoder,
        max_seq_length=config.max_seq_length,
        precision=config.encoder_precision,
        need_embedding=config.need_embedding,
    )


def check_need_embedding(encoder: TextEncoder, config: RewardConfig) -> None:
    """The heads read need embeddings made one way: an encoder that makes them another way is an error."""
    given = getattr(encoder, "need_embedding", "text")  # an encoder without the option embeds the joined text
    if given != config.need_embedding:
        raise ValueError(
            f"the reward models embed the need as {config.need_embedding!r}, but the encoder given embeds it as "
            f"{given!r}: build the encoder with reward_encoder(config)"
        )


def load_reward_stack(folder: str | Path, *, encoder: TextEncoder | None = None) -> RewardStack:
    """Reopen a folder written by :func:`build_reward_stack` (offline; nothing is retrained)."""
    folder = Path(folder)
    if not is_done(folder):
        raise FileNotFoundError(f"{folder}: no complete reward models (no {DONE} marker); train them with csrl train")
    values = json.loads((folder / "reward_config.json").read_text())
    values.setdefault("need_embedding", "text")  # folders from before the option embedded the joined text
    config = RewardConfig(**values)
    encoder = encoder or reward_encoder(config)
    check_need_embedding(encoder, config)
    documents = load_knowledge_base(folder / "knowledge_base.jsonl")
    retriever = HybridRetriever.load(folder / "retriever", documents, encoder)
    retrieval = RetrievalReward.load(folder / "retrieval", retriever)
    intent = IntentClassifier.load(folder / "intent", encoder)
    satisfaction = SatisfactionClassifier.load(folder / "satisfaction", encoder)
    reward = _compose(config, retrieval, intent, satisfaction)
    return RewardStack(config, encoder, documents, retriever, intent, satisfaction, reward)


def build_reward_stack(
    corpus: Corpus,
    folder: str | Path,
    config: RewardConfig | None = None,
    training: RewardTrainingConfig | None = None,
    *,
    encoder: TextEncoder | None = None,
    log=print,
) -> RewardStack:
    """Train (what is missing of) the reward models on the corpus' train split, evaluate them on its test split.

    Returns the loaded stack; ``folder/metrics.json`` holds the held-out metrics.
    """
    folder = Path(folder)
    if is_done(folder):
        log(f"rewards: cached in {folder}")
        return load_reward_stack(folder, encoder=encoder)
    config = config or RewardConfig()
    training = training or RewardTrainingConfig()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reward_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    if not corpus.knowledge_base:
        raise ValueError("the knowledge base is empty: pass --kb, or logs whose tool turns return documents")
    write_jsonl(corpus.knowledge_base, folder / "knowledge_base.jsonl")
    train, test = corpus.split("train"), corpus.split("test")
    if not train or not test:
        raise ValueError(f"need train and test conversations, got {len(train)} and {len(test)}: use more logs")
    encoder = encoder or reward_encoder(config)
    check_need_embedding(encoder, config)
    timings = {}

    start = time.perf_counter()
    if is_done(folder / "retrieval"):
        retriever = HybridRetriever.load(folder / "retriever", corpus.knowledge_base, encoder)
        retrieval = RetrievalReward.load(folder / "retrieval", retriever)
    else:
        log(f"rewards: indexing {len(corpus.knowledge_base):,} KB documents (BM25 + FAISS)")
        retriever = HybridRetriever(corpus.knowledge_base, encoder)
        retrieval = RetrievalReward(retriever)
        if logged_searches(train, retriever.id_to_index):
            retriever.fit_calibration(train)
            retrieval.fit(train)
        else:  # no logged lookups: the KB documents that support the agents' logged answers stand in for them
            queries = answer_supported_searches(train, retriever, seed=training.seed)
            needs = answer_supported_searches(
                train, retriever, as_need=True, need_messages=retrieval.need_messages, seed=training.seed
            )
            log(f"rewards: no logged KB lookups; calibrating retrieval on {len(needs):,} agent answers the KB supports")
            retriever.fit_calibration(train, searches=queries)
            retrieval.fit(train, searches=needs)
            update_json(folder / INFERRED_FILE, retrieval_calibration={
                "source": "the KB document that best supports each logged agent answer, against other documents",
                "query_pairs": len(queries), "need_pairs": len(needs)})  # fmt: skip
        retriever.save(folder / "retriever")
        retrieval.save(folder / "retrieval")
        mark_done(folder / "retrieval")
    timings["retrieval_s"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    if is_done(folder / "intent"):
        intent = IntentClassifier.load(folder / "intent", encoder)
    else:
        log("rewards: training the intent classifier")
        intent_config = IntentTrainConfig(
            epochs=training.intent_epochs, max_examples=training.intent_max_examples, seed=training.seed
        )
        intent = train_intent_from_logs(train, encoder, intent_config)
        intent.save(folder / "intent")
        mark_done(folder / "intent")
    timings["intent_s"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    if is_done(folder / "satisfaction"):
        satisfaction = SatisfactionClassifier.load(folder / "satisfaction", encoder)
    else:
        log("rewards: training the satisfaction classifier")
        examples = satisfaction_examples(
            train, training.seed, max_contexts=training.satisfaction_contexts, broken=training.broken_reply_negatives
        )
        counts = label_counts(examples)
        update_json(folder / INFERRED_FILE, satisfaction_labels=counts)
        if PRESUMED_GOOD in counts["by_source"]:
            log(
                "inferred: the logs carry no ratings, outcomes or telling reactions; the satisfaction stage takes "
                "the logged agent replies as good, against synthetic bad replies in the same context"
            )
        satisfaction_config = SatisfactionTrainConfig(
            epochs=training.satisfaction_epochs, max_examples=training.satisfaction_max_examples, seed=training.seed
        )
        satisfaction = train_satisfaction_classifier(examples, encoder, satisfaction_config)
        satisfaction.save(folder / "satisfaction")
        mark_done(folder / "satisfaction")
    timings["satisfaction_s"] = round(time.perf_counter() - start, 1)

    reward = _compose(config, retrieval, intent, satisfaction)
    stack = RewardStack(config, encoder, list(corpus.knowledge_base), retriever, intent, satisfaction, reward)
    log("rewards: held-out evaluation")
    start = time.perf_counter()
    metrics = evaluate_reward_stack(
        stack, test, max_turns=training.eval_max_turns, seed=training.seed, broken=training.broken_reply_negatives
    )
    timings["evaluation_s"] = round(time.perf_counter() - start, 1)
    metrics["timings"] = timings
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    mark_done(folder, timings)
    log("rewards: " + ", ".join(f"{k} {v}" for k, v in _headline(metrics).items()))
    return stack


def evaluate_reward_stack(
    stack: RewardStack, conversations, *, max_turns: int = 500, seed: int = 0, broken: bool = False
) -> dict:
    """Held-out metrics of every learned component and the composite's integrity, as flat dotted keys.

    ``broken``: the satisfaction examples include the rude and garbled negatives, as in a training that used them.
    """
    metrics: dict = {}
    intent = evaluate_intent(stack.intent, conversations)
    metrics["intent.accuracy"] = {"value": intent["accuracy"], "n": intent["n"]}
    metrics["intent.macro_f1"] = {"value": intent["macro_f1"], "n": intent["n"]}
    for part in ("single_task", "multi_task"):  # STAR: multi-task dialogues switch intent mid-conversation
        metrics[f"intent.accuracy_{part}"] = {"value": intent[part]["accuracy"], "n": intent[part]["n"]}
    satisfaction = evaluate_satisfaction(
        stack.satisfaction, conversations, max_contexts=max_turns, seed=seed, broken=broken
    )
    metrics["satisfaction.auc"] = {"value": satisfaction["auc"], "n": satisfaction["n"]}
    metrics["satisfaction.macro_f1"] = {"value": satisfaction["macro_f1"], "n": satisfaction["n"]}
    rated = evaluate_on_ratings(stack.satisfaction, conversations)
    if rated is not None:  # rated logs: the held-out ratings alone, beside the figure with synthetic negatives
        metrics["satisfaction.auc_rated"] = {"value": rated["auc"], "n": rated["n"]}
        satisfaction["rated"] = rated
    if logged_searches(conversations, stack.retriever.id_to_index):
        recall = retrieval_recall(stack.retriever, conversations, ks=(1, 5))
        for k in (1, 5):
            metrics[f"retrieval.recall@{k}"] = {"value": recall[f"recall@{k}"], "n": recall["n"]}
            # a document the query cannot tell apart from the logged one counts (STAR's records repeat, see README)
            metrics[f"retrieval.recall_equivalent@{k}"] = {"value": recall[f"recall_equivalent@{k}"], "n": recall["n"]}
    else:  # no logged lookups: is the document behind the agent's answer found from what the customer said?
        searches = answer_supported_searches(conversations, stack.retriever, seed=seed)
        recall = retrieval_recall(stack.retriever, conversations, ks=(1, 5), searches=searches) if searches else {}
        for k in (1, 5):
            if recall:
                metrics[f"retrieval.answer_recall@{k}"] = {"value": recall[f"recall@{k}"], "n": recall["n"]}
                # a document of the same intent holding every word of the customer's that the answer's holds
                metrics[f"retrieval.answer_recall_equivalent@{k}"] = {
                    "value": recall[f"recall_equivalent@{k}"],
                    "n": recall["n"],
                }
    for kind, result in integrity_check(stack.reward, conversations, max_turns=max_turns, seed=seed).items():
        metrics[f"integrity.{kind}"] = {"value": result["accuracy"], "n": result["n"]}
    metrics["details"] = {"intent": intent, "satisfaction": satisfaction, "retrieval": recall}
    return metrics


def _headline(metrics: dict) -> dict:
    return {k: v["value"] for k, v in metrics.items() if isinstance(v, dict) and "value" in v}
