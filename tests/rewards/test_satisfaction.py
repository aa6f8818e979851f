"""Satisfaction stage: context features, training, save/load and input guards (labels: test_satisfaction_labels.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from csrl.rewards.context import contexts_from_conversation
from csrl.rewards.satisfaction import (
    SCALAR_NAMES,
    SatisfactionClassifier,
    SatisfactionHead,
    SatisfactionReward,
    SatisfactionTrainConfig,
    context_scalars,
    evaluate_satisfaction,
    feature_dim,
    train_satisfaction_classifier,
)
from csrl.rewards.satisfaction_labels import SatisfactionExample, satisfaction_examples

NAME_THEN_REPORT = [
    ("customer", "My card was stolen"),
    ("agent", "Could I get your name?"),
    ("customer", "Sam Lee"),
    ("agent", "Reported."),
]


def test_context_scalars_see_a_repeated_reply_and_the_position(fraud_conversation):
    second = contexts_from_conversation(fraud_conversation(NAME_THEN_REPORT))[1]
    repeat = dict(zip(SCALAR_NAMES, context_scalars(second, "could I get your NAME?"), strict=True))
    fresh = dict(zip(SCALAR_NAMES, context_scalars(second, "Reported."), strict=True))
    assert repeat["repeat_max"] == repeat["repeat_exact"] == 1.0
    assert fresh["repeat_max"] == fresh["repeat_exact"] == 0.0
    assert fresh["customer_position"] == 0.2 and fresh["agent_position"] == 0.1 and fresh["first_reply"] == 0.0


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ([], "empty"),
        ([SatisfactionExample("a", "b", 1, "thanks")] * 3, "needs both 0 and 1"),
        ([SatisfactionExample("a", "b", 2, "x"), SatisfactionExample("a", "c", 0, "x")], "must be 0 or 1"),
    ],
)
def test_training_rejects_bad_sets(examples, message):
    with pytest.raises(ValueError, match=message):
        train_satisfaction_classifier(examples, encoder=None)


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("lr", -1.0), ("max_examples", 0), ("hidden", 0), ("ranking_weight", -1.0)]
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        SatisfactionTrainConfig(**{field: value})


def test_predict_proba_rejects_mismatched_lengths():
    classifier = SatisfactionClassifier(encoder=None, head=SatisfactionHead(8), hidden=256)
    with pytest.raises(ValueError, match="2 contexts but 1 replies"):
        classifier.predict_proba(["a", "b"], ["c"])


@pytest.fixture(scope="module")
def trained(star_corpus, encoder):
    examples = satisfaction_examples(star_corpus.split("train")[:60], seed=0, max_contexts=80)
    config = SatisfactionTrainConfig(epochs=40, seed=0)
    return train_satisfaction_classifier(examples, encoder, config), config


def test_training_changes_parameters_and_beats_chance(trained, star_corpus, encoder):
    classifier, config = trained
    torch.manual_seed(config.seed)  # the trainer's initial head, rebuilt
    initial = SatisfactionHead(encoder.dim, hidden=config.hidden)
    assert all(not torch.equal(a, b) for a, b in zip(initial.parameters(), classifier.head.parameters(), strict=True))
    result = evaluate_satisfaction(classifier, star_corpus.split("test")[:30], max_contexts=30)
    assert result["n"] == 60
    assert result["auc"] > 0.65  # chance is 0.5
    scores = SatisfactionReward(classifier).score(contexts_from_conversation(star_corpus.split("test")[0]))
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_save_load_offline_gives_identical_predictions(trained, tmp_path, monkeypatch, fraud_conversation):
    from csrl.rewards.encoder import TextEncoder

    classifier, _ = trained
    classifier.save(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    reloaded = SatisfactionClassifier.load(tmp_path, TextEncoder())
    turns = [("customer", "my card was stolen"), ("agent", "Your name?"), ("customer", "Sam"), ("agent", "Reported.")]
    contexts = contexts_from_conversation(fraud_conversation(turns))
    replies = ["I can report that for you.", "ok"]
    features = classifier.features(contexts, replies)
    assert features.shape == (2, feature_dim(classifier.encoder.dim))
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded.head(features).numpy(), classifier.head(features).numpy())
    # through each one's own encoder, on the same batch (padding to another batch's length moves embeddings
    # by ~1e-7 in float32, ~1e-3 in bfloat16)
    classifier.encoder.clear_cache()
    np.testing.assert_allclose(
        reloaded.predict_proba(contexts, replies), classifier.predict_proba(contexts, replies), atol=1e-5
    )


def test_load_refuses_a_folder_without_a_classifier(tmp_path, encoder):
    with pytest.raises(ValueError, match="holds no satisfaction classifier"):
        SatisfactionClassifier.load(tmp_path, encoder)


def test_load_refuses_an_old_format_folder(trained, tmp_path, encoder):
    classifier, _ = trained
    classifier.save(tmp_path)
    config_file = tmp_path / "satisfaction_config.json"
    old = {"encoder": encoder.name, "dim": encoder.dim, "hidden": 256}  # format 1: no "format" key
    config_file.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="format 1 .*retrain"):
        SatisfactionClassifier.load(tmp_path, encoder)


def test_rated_turns_alone_are_scored_against_their_ratings(trained):
    from sklearn.metrics import roc_auc_score

    from csrl.data.schema import Conversation, Turn
    from csrl.rewards.satisfaction import evaluate_on_ratings

    classifier, _ = trained

    def rated(conv_id, reply, rating):
        return Conversation(
            conv_id,
            (
                Turn("customer", "My card was stolen, please block it"),
                Turn("agent", "Could I get your name?"),  # unrated: its next customer message has no rating
                Turn("customer", "Sam Lee"),
                Turn("agent", reply),
                Turn("customer", "ok", rating=rating),
            ),
        )

    conversations = [
        rated("a", "Thank you Sam, your card is blocked and a fraud case is open.", 5),
        rated("b", "Sam Lee", 1),
        rated("c", "ok", 2),
        rated("d", "Your card is now blocked, Sam; the new one arrives in five days.", 3),
    ]
    result = evaluate_on_ratings(classifier, conversations)
    assert result["n"] == 4 and result["dissatisfied"] == 2 and result["ratings"] == {"1": 1, "2": 1, "3": 1, "5": 1}
    proba = classifier.predict_proba([contexts_from_conversation(c)[1] for c in conversations])
    assert result["auc"] == round(roc_auc_score([0, 1, 1, 0], 1 - proba), 4)
    assert evaluate_on_ratings(classifier, conversations[:1]) is None  # one side only: no AUC
    unrated = Conversation("x", (Turn("customer", "hi"), Turn("agent", "hello")))
    assert evaluate_on_ratings(classifier, [unrated]) is None
