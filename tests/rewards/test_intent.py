"""Intent stage: score arithmetic, example labelling, training, save/load and input guards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from csrl.data.schema import Conversation, Turn
from csrl.rewards.context import TurnContext, contexts_from_conversation
from csrl.rewards.intent import (
    IntentClassifier,
    IntentHead,
    IntentReward,
    IntentTrainConfig,
    evaluate_intent,
    expected_intent_score,
    intent_examples,
    intent_score,
    is_greeting_only,
    moment_features,
    train_context_head,
    train_intent_classifier,
)

THIRD = 1.0 / 3.0


class FixedClassifier:
    """A stand-in with known probabilities: need texts and replies map to fixed rows."""

    def __init__(self, labels, rows):
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.rows = rows

    def predict_proba(self, texts):
        return np.array([self.rows[t] for t in texts], dtype=np.float32)

    def predict(self, texts):
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def predict_customer(self, contexts):
        return self.predict([ctx.need_text() for ctx in contexts])


def context(reply="ok", declared=None, gold=None, need="my card was stolen"):
    return TurnContext(history=(Turn("customer", need),), reply=reply, declared_intent=declared, gold_intent=gold)


@pytest.mark.parametrize(
    ("customer", "turn", "expected"),
    [
        ("bank_fraud_report", "bank_fraud_report", 1.0),
        ("bank_fraud_report", "bank_balance", -THIRD),
        ("bank_fraud_report", None, -THIRD),
        (None, "bank_balance", -THIRD),
    ],
)
def test_intent_score_table(customer, turn, expected):
    assert intent_score(customer, turn) == pytest.approx(expected)


@pytest.mark.parametrize(("p", "expected"), [(0.0, -THIRD), (0.25, 0.0), (0.5, THIRD), (0.75, 2 * THIRD), (1.0, 1.0)])
def test_expected_score_table(p, expected):
    assert expected_intent_score(p) == pytest.approx(expected)


def test_expected_score_rejects_non_probability():
    with pytest.raises(ValueError, match="not a probability"):
        expected_intent_score(1.5)


def test_reward_uses_gold_then_classifier_then_expected_form():
    rows = {
        "my card was stolen": [0.9, 0.1],  # need text -> fraud
        "Report filed.": [0.8, 0.2],  # reply: P(fraud) = 0.8
        "Your balance is $5.": [0.25, 0.75],  # reply: P(fraud) = 0.25
    }
    reward = IntentReward(FixedClassifier(["bank_fraud_report", "bank_balance"], rows))
    scores = reward.score(
        [
            context(declared="bank_fraud_report", gold="bank_fraud_report"),  # gold, right -> +1
            context(declared="bank_balance", gold="bank_fraud_report"),  # gold, wrong -> -1/3
            context(declared="bank_fraud_report"),  # classifier says fraud -> +1
            context(declared="bank_balance"),  # classifier says fraud -> -1/3
            context(reply="Report filed."),  # no declaration: 0.8 - 0.2/3
            context(reply="Your balance is $5.", gold="bank_fraud_report"),  # 0.25 - 0.75/3 = 0
            context(reply="Report filed.", gold="weather"),  # unknown label: p = 0
        ]
    )
    expected = [1.0, -THIRD, 1.0, -THIRD, 0.8 - 0.2 * THIRD, 0.0, -THIRD]
    assert scores == pytest.approx(expected, abs=1e-6)
    assert all(-THIRD - 1e-9 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Hello", True), ("hi there!", True), ("Good morning.", True), ("", True), ("Hello, I lost my card", False)],
)
def test_greeting_only_table(text, expected):
    assert is_greeting_only(text) is expected


def test_intent_examples_labels_customer_messages_by_the_answering_agent_turn():
    conv = Conversation.from_dict(
        {
            "id": "c",
            "intent": "hotel_search",
            "turns": [
                {"role": "customer", "text": "Find me a hotel"},
                {"role": "agent", "text": "Which area?", "intent": "hotel_search"},
                {"role": "customer", "text": "Book the Hilton"},
                {"role": "tool", "query": "hotel_book Name=Hilton"},
                {"role": "agent", "text": "Booked.", "intent": "hotel_book"},
                {"role": "customer", "text": "Bye"},
            ],
        }
    )
    got = [(e.source, e.text, e.label) for e in intent_examples([conv])]
    assert got == [
        ("customer", "Find me a hotel", "hotel_search"),
        ("agent", "Which area?", "hotel_search"),
        ("customer", "Book the Hilton", "hotel_book"),
        ("agent", "Booked.", "hotel_book"),
        ("customer", "Bye", "hotel_search"),  # no agent answers it: the conversation's intent
        ("need", "Find me a hotel", "hotel_search"),
        ("need", "Book the Hilton Find me a hotel", "hotel_book"),
    ]


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        ([], [], "empty"),
        (["a", "b"], ["x", "x"], "same label"),
        (["a", "b"], ["x"], "2 texts but 1 labels"),
    ],
)
def test_training_rejects_bad_sets(texts, labels, message):
    with pytest.raises(ValueError, match=message):
        train_intent_classifier(texts, labels, encoder=None)


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("lr", 0.0), ("max_examples", 1), ("hidden", -1), ("batch_size", 0)]
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        IntentTrainConfig(**{field: value})


@pytest.fixture(scope="module")
def small_star(star_corpus):
    """Four tasks, a few dozen conversations each: seconds to embed."""
    tasks = {"weather", "bank_fraud_report", "ride_book", "trivia"}
    train = [c for c in star_corpus.split("train") if c.intent in tasks][:80]
    test = [c for c in star_corpus.split("test") if c.intent in tasks][:24]
    return train, test


@pytest.fixture(scope="module")
def trained(small_star, encoder):
    # customer messages only: short texts embed fastest, and they carry the task words
    examples = [e for e in intent_examples(small_star[0]) if e.source == "customer"]
    config = IntentTrainConfig(epochs=40, lr=3e-3, max_examples=160, seed=0, hidden=64)
    return train_intent_classifier([e.text for e in examples], [e.label for e in examples], encoder, config), config


def test_training_changes_parameters_and_beats_chance(trained, small_star, encoder):
    classifier, config = trained
    torch.manual_seed(config.seed)  # the trainer's initial head, rebuilt
    initial = IntentHead(encoder.dim, len(classifier.labels), hidden=config.hidden)
    changed = [not torch.equal(a, b) for a, b in zip(initial.parameters(), classifier.head.parameters(), strict=True)]
    assert all(changed)
    result = evaluate_intent(classifier, small_star[1], max_turns=50)
    assert result["n"] > 25
    assert result["accuracy"] > 0.6  # chance is ~0.25 over these four tasks
    proba = classifier.predict_proba(["what's the weather like tomorrow", "someone stole my card"])
    assert proba.shape == (2, len(classifier.labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_save_load_offline_gives_identical_predictions(trained, tmp_path, monkeypatch):
    from csrl.rewards.encoder import TextEncoder

    classifier, _ = trained
    classifier.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intent_config.json", "intent_head.safetensors"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    reloaded = IntentClassifier.load(tmp_path, TextEncoder())  # a fresh encoder, no network
    texts = ["will it rain in Boston", "I need a ride to the airport", "Hello"]
    embeddings = classifier.encoder.encode(texts)
    np.testing.assert_array_equal(
        reloaded.proba_from_embeddings(embeddings), classifier.proba_from_embeddings(embeddings)
    )
    # through each one's own encoder, on the same batch (padding to another batch's length moves embeddings
    # by ~1e-7 in float32, ~1e-3 in bfloat16)
    classifier.encoder.clear_cache()
    np.testing.assert_allclose(reloaded.predict_proba(texts), classifier.predict_proba(texts), atol=1e-5)
    assert reloaded.labels == classifier.labels


def test_load_refuses_another_encoder_and_missing_files(trained, tmp_path, encoder):
    classifier, _ = trained
    with pytest.raises(ValueError, match="holds no intent classifier"):
        IntentClassifier.load(tmp_path, encoder)
    classifier.save(tmp_path)
    config = json.loads((tmp_path / "intent_config.json").read_text())
    config["encoder"] = "some/other-model"
    (tmp_path / "intent_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="some/other-model"):
        IntentClassifier.load(tmp_path, encoder)


def test_context_head_reads_the_agents_previous_reply(encoder):
    """A hand-set context head that looks only at the third block (the previous reply) follows it."""
    anchors = ["What city would you like the weather for?", "Which trivia question would you like?"]
    head = IntentHead(3 * encoder.dim, 2, hidden=0)
    with torch.no_grad():
        head.net[0].weight.zero_()
        head.net[0].bias.zero_()
        head.net[0].weight[:, 2 * encoder.dim :] = torch.from_numpy(encoder.encode(anchors)) * 10
    classifier = IntentClassifier(encoder, IntentHead(encoder.dim, 2, hidden=0), ["weather", "trivia"], 0, head)
    history = (Turn("customer", "I want the weather and a trivia question"),)
    contexts = [TurnContext(history + (Turn("agent", anchors[i]), Turn("customer", "yes")), "ok") for i in (1, 0)]
    assert classifier.predict_customer(contexts) == ["trivia", "weather"]
    assert moment_features(encoder, contexts).shape == (2, 3 * encoder.dim)
    first_turn = TurnContext(history, "ok")  # no previous reply: the third block embeds ""
    assert first_turn.moment_texts() == (history[0].text, history[0].text, "")


@pytest.fixture(scope="module")
def with_context_head(trained, small_star):
    classifier, config = trained
    contexts = [ctx for conv in small_star[0] for ctx in contexts_from_conversation(conv) if ctx.gold_intent]
    head = train_context_head(classifier, contexts, config)
    return IntentClassifier(classifier.encoder, classifier.head, classifier.labels, classifier.hidden, head)


def test_context_head_training_changes_parameters_and_beats_chance(with_context_head, trained, small_star, encoder):
    _, config = trained
    torch.manual_seed(config.seed)
    initial = IntentHead(3 * encoder.dim, len(with_context_head.labels), hidden=config.hidden)
    params = zip(initial.parameters(), with_context_head.context_head.parameters(), strict=True)
    assert all(not torch.equal(a, b) for a, b in params)
    result = evaluate_intent(with_context_head, small_star[1], max_turns=50)
    assert result["accuracy"] > 0.6  # chance is ~0.25 over these four tasks
    assert result["need_text_only"]["n"] == result["n"]


def test_context_head_save_load_and_older_folders(with_context_head, trained, tmp_path, encoder):
    with_context_head.save(tmp_path / "new")
    assert (tmp_path / "new" / "intent_context_head.safetensors").is_file()
    reloaded = IntentClassifier.load(tmp_path / "new", encoder)
    test = [ctx for ctx in contexts_from_conversation(Conversation.from_dict({"id": "c", "turns": [
        {"role": "customer", "text": "Is it going to rain in Boston?"},
        {"role": "agent", "text": "Which day?"},
        {"role": "customer", "text": "Tomorrow"},
        {"role": "agent", "text": "Rain all day."}]}))]  # fmt: skip
    np.testing.assert_array_equal(reloaded.customer_proba(test), with_context_head.customer_proba(test))
    # a folder written before the context head existed reads the need text with the text head
    classifier, _ = trained
    classifier.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "intent_config.json").read_text())
    del config["context_head"]
    (tmp_path / "old" / "intent_config.json").write_text(json.dumps(config))
    old = IntentClassifier.load(tmp_path / "old", encoder)
    assert old.context_head is None
    assert old.predict_customer(test) == old.predict([ctx.need_text() for ctx in test])
    (tmp_path / "new" / "intent_context_head.safetensors").unlink()
    with pytest.raises(ValueError, match="intent_context_head.safetensors is missing"):
        IntentClassifier.load(tmp_path / "new", encoder)
