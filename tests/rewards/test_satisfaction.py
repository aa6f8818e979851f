"""Satisfaction stage: label derivation, synthetic negatives, training, save/load and input guards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from csrl.data.schema import Conversation
from csrl.rewards.context import contexts_from_conversation
from csrl.rewards.satisfaction import (
    SCALAR_NAMES,
    SYNTHETIC_KINDS,
    SatisfactionClassifier,
    SatisfactionExample,
    SatisfactionHead,
    SatisfactionReward,
    SatisfactionTrainConfig,
    context_scalars,
    evaluate_satisfaction,
    feature_dim,
    logged_label,
    ranking_pairs,
    rating_label,
    reaction_label,
    roc_auc,
    satisfaction_examples,
    train_satisfaction_classifier,
)


@pytest.mark.parametrize(
    ("message", "previous", "expected"),
    [
        ("Thanks!", None, (1, "thanks")),
        ("Perfect, that's all I needed", None, (1, "thanks")),
        ("That's wrong, my name is Sam", None, (0, "complaint")),
        ("This is useless", None, (0, "complaint")),
        ("thanks for nothing", None, (0, "complaint")),  # complaints win over thanks
        ("I need a table for two at 7pm", "I need a table for two at 7pm.", (0, "repeat")),
        ("yes", "yes", (None, "neutral")),  # short answers repeat innocently
        ("Sam Lee", None, (None, "neutral")),
    ],
)
def test_reaction_label_table(message, previous, expected):
    assert reaction_label(message, previous) == expected


@pytest.mark.parametrize(("rating", "expected"), [(1, 0), (2, 0), (3, None), (4, 1), (5, 1)])
def test_rating_label_table(rating, expected):
    assert rating_label(rating) == expected


def conversation(turns, satisfied=True, completed=True):
    return Conversation.from_dict(
        {
            "id": "c",
            "intent": "bank_fraud_report",
            "turns": turns,
            "outcome": {"satisfied": satisfied, "completed": completed},
        }
    )


def agent(text):
    return {"role": "agent", "text": text, "intent": "bank_fraud_report"}


def customer(text, rating=None):
    return {"role": "customer", "text": text} | ({"rating": rating} if rating is not None else {})


@pytest.mark.parametrize(
    ("turns", "satisfied", "expected"),
    [
        ([customer("My card was stolen"), agent("Name?"), customer("Sam", rating=5)], True, (1, "rating")),
        ([customer("My card was stolen"), agent("Name?"), customer("Thanks!", rating=1)], True, (0, "rating")),
        ([customer("My card was stolen"), agent("Name?"), customer("Sam", rating=3)], True, (None, "rating_3")),
        ([customer("My card was stolen"), agent("Done."), customer("Great, thanks")], False, (1, "thanks")),
        (
            [customer("My card was stolen"), agent("Weather is sunny"), customer("That's not what I asked")],
            True,
            (0, "complaint"),
        ),
        (
            [customer("Someone used my card today"), agent("Hi"), customer("Someone used my card today")],
            True,
            (0, "repeat"),
        ),
        ([customer("My card was stolen"), agent("Name?"), customer("Sam")], True, (1, "neutral_satisfied")),
        ([customer("My card was stolen"), agent("Name?"), customer("Sam")], False, (None, "neutral")),
        ([customer("My card was stolen"), agent("Reported.")], True, (1, "ended_satisfied")),
        ([customer("My card was stolen"), agent("Please hold.")], False, (0, "disconnect")),
    ],
)
def test_logged_label_table(turns, satisfied, expected):
    assert logged_label(conversation(turns, satisfied=satisfied), 1) == expected


def test_examples_pair_each_logged_turn_with_a_synthetic_negative_in_the_same_context():
    conv = conversation(
        [customer("My card was stolen"), agent("Could I get your name?"), customer("Sam Lee"), agent("Reported.")]
    )
    examples = satisfaction_examples([conv], seed=0)
    logged, synthetic = examples[:2], examples[2:]
    assert [(e.reply, e.label, e.source) for e in logged] == [
        ("Could I get your name?", 1, "neutral_satisfied"),
        ("Reported.", 1, "ended_satisfied"),
    ]
    assert len(synthetic) == 2
    assert all(e.label == 0 and e.source in SYNTHETIC_KINDS for e in synthetic)
    assert [e.context for e in synthetic] == [e.context for e in logged]
    assert all(s.reply != real.reply for s, real in zip(synthetic, logged, strict=True))
    assert satisfaction_examples([conv], seed=0) == examples  # seeded
    assert ranking_pairs(examples) == [(0, 2), (1, 3)]  # each logged reply above its negative, same context
    assert ranking_pairs([examples[3], examples[0]]) == [], "a subsample that split the pair has none"


def test_every_synthetic_kind_appears_and_parrot_repeats_the_customer(star_corpus):
    examples = satisfaction_examples(star_corpus.split("test")[:40], seed=1)
    kinds = {e.source for e in examples if e.label == 0}
    assert set(SYNTHETIC_KINDS) <= kinds
    parrots = [e for e in examples if e.source == "parrot"]
    assert parrots and all(e.context.last_customer_message() == e.reply for e in parrots)


def test_wrong_moment_negatives_come_from_the_right_side_of_the_conversation(star_corpus):
    examples = satisfaction_examples(star_corpus.split("test")[:40], seed=1)
    earlier = [e for e in examples if e.source == "same_conversation_earlier"]
    later = [e for e in examples if e.source == "same_conversation_later"]
    assert earlier and later
    assert all(e.reply in e.context.previous_agent_replies() for e in earlier)  # already said: in the history
    # a later reply is mostly new here (STAR agents sometimes say the same line twice)
    assert np.mean([e.reply in e.context.previous_agent_replies() for e in later]) < 0.2
    assert all(e.reply != e.context.reply for e in earlier + later)
    wrong_moment = len(earlier) + len(later)
    assert wrong_moment / sum(e.label == 0 for e in examples) > 0.4  # about half of the synthetic negatives


def test_context_scalars_see_a_repeated_reply_and_the_position():
    conv = conversation(
        [customer("My card was stolen"), agent("Could I get your name?"), customer("Sam Lee"), agent("Reported.")]
    )
    second = contexts_from_conversation(conv)[1]
    repeat = dict(zip(SCALAR_NAMES, context_scalars(second, "could I get your NAME?"), strict=True))
    fresh = dict(zip(SCALAR_NAMES, context_scalars(second, "Reported."), strict=True))
    assert repeat["repeat_max"] == repeat["repeat_exact"] == 1.0
    assert fresh["repeat_max"] == fresh["repeat_exact"] == 0.0
    assert fresh["customer_position"] == 0.2 and fresh["agent_position"] == 0.1 and fresh["first_reply"] == 0.0


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 1], [0.2, 0.8], 1.0),
        ([0, 1], [0.8, 0.2], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
    ],
)
def test_roc_auc_table(labels, scores, expected):
    assert roc_auc(labels, scores) == pytest.approx(expected)


def test_roc_auc_one_class_is_nan():
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


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


def test_ranking_term_learns_an_order_the_labels_do_not_show():
    from csrl.rewards.intent import fit_head

    # labels are coin flips; only the pairs say "higher feature 0 is better"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=generator)
    y = torch.randint(0, 2, (400,), generator=generator).float()
    pairs = torch.tensor([(i, i + 1) if x[i, 0] > x[i + 1, 0] else (i + 1, i) for i in range(0, 400, 2)])
    config = SatisfactionTrainConfig(epochs=30, lr=1e-2, batch_size=64)

    def pairwise_accuracy(ranking_weight):
        torch.manual_seed(0)
        head = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
        fit_head(head, x, y, torch.nn.BCEWithLogitsLoss(), config, ranking_pairs=pairs, ranking_weight=ranking_weight)
        with torch.no_grad():
            return (head(x[pairs[:, 0]]) > head(x[pairs[:, 1]])).float().mean().item()

    assert pairwise_accuracy(3.0) > 0.9
    assert pairwise_accuracy(0.0) < 0.75


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


def test_save_load_offline_gives_identical_predictions(trained, tmp_path, monkeypatch):
    from csrl.rewards.encoder import TextEncoder

    classifier, _ = trained
    classifier.save(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    reloaded = SatisfactionClassifier.load(tmp_path, TextEncoder())
    contexts = contexts_from_conversation(
        conversation([customer("my card was stolen"), agent("Your name?"), customer("Sam"), agent("Reported.")])
    )
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
