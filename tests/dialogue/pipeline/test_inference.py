"""What `csrl train` infers for logs that lack annotations: intents, a knowledge base, the retrieval calibration."""

import csv
import json

import pytest

from csrl.data import Conversation, Corpus, LoadReport, Turn
from csrl.dialogue.pipeline.config import DataConfig, TrainConfig
from csrl.dialogue.pipeline.inference import ASSIGNMENTS_FILE, INTENTS_FILE, conversation_need, infer_intents
from csrl.dialogue.pipeline.runs import open_run
from csrl.dialogue.pipeline.training import subset_corpus, train
from csrl.rewards.stack import INFERRED_FILE


@pytest.fixture(scope="module")
def text_only_run(tmp_path_factory, star_corpus):
    """A debug run on STAR's two most frequent tasks stripped to customer and agent text (no labels, no lookups)."""
    folder = tmp_path_factory.mktemp("text_only")
    subset = subset_corpus(star_corpus, 2, 24)
    with open(folder / "logs.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "role", "text"])
        for conversation in subset.conversations:
            writer.writerows((conversation.id, t.role, t.text) for t in conversation.turns if t.role != "tool")
    held_back = {c.id: c.intent for c in subset.conversations}
    config = TrainConfig.from_preset("debug", data=DataConfig(source=str(folder / "logs.csv")))
    config.sft.search_steps = True  # off by default (see SFTConfig); the run tests both inference and the steps
    messages = []
    train(config, folder / "run", progress=False, log=messages.append)
    return folder / "run", config, held_back, messages


def test_text_only_logs_train_and_say_what_was_inferred(text_only_run):
    run, _, held_back, messages = text_only_run
    inferred = json.loads((run / "rewards" / INFERRED_FILE).read_text())
    assert inferred["intents"]["logged"] == 0 and inferred["intents"]["inferred"] == len(held_back)
    assert "intent discovery" in inferred["intents"]["source"] and inferred["intents"]["intents"] >= 2
    assert inferred["knowledge_base"]["source"].startswith("the informative agent answers")
    assert inferred["knowledge_base"]["documents"] > 10
    assert inferred["retrieval_calibration"]["need_pairs"] > 0
    assert inferred["satisfaction_labels"]["total"] > 0
    assert any(m.startswith("inferred: intents from intent discovery") for m in messages)
    assert any(m.startswith("inferred: a knowledge base of") for m in messages)
    metrics = json.loads((run / "rewards" / "metrics.json").read_text())
    for key in (
        "intent.accuracy",
        "satisfaction.auc",
        "retrieval.answer_recall@5",
        "retrieval.answer_recall_equivalent@5",
        "integrity.parrot",
    ):
        assert 0 <= metrics[key]["value"] <= 1 and metrics[key]["n"] > 0, key
    assert (run / "ppo" / "policy").is_dir()
    # no logged lookups: SFT learned to search where the KB supports the answer
    steps = json.loads((run / "sft" / "sft_metrics.json").read_text())["search_steps"]
    assert 0 < steps["search_steps"] <= steps["answers"]
    assert any(m.startswith("sft: the logs have no lookups; ") for m in messages)


def test_discovered_intents_match_the_held_back_tasks(text_only_run):
    from csrl.rewards.discovery import cluster_metrics

    run, _, held_back, _ = text_only_run
    with open(run / "rewards" / ASSIGNMENTS_FILE, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["conversation_id"] for r in rows} == set(held_back) and {r["source"] for r in rows} == {"inferred"}
    scores = cluster_metrics([held_back[r["conversation_id"]] for r in rows], [r["intent"] for r in rows])
    assert scores["ACC"] >= 0.8, scores
    intents = json.loads((run / "rewards" / INTENTS_FILE).read_text())["intents"]
    assert {r["intent"] for r in rows} <= {i["name"] for i in intents}
    # a reopened run sees the same labels: the held-out simulation's intents are the inferred ones
    reopened = open_run(run).corpus
    assert {c.id: c.intent for c in reopened.conversations} == {r["conversation_id"]: r["intent"] for r in rows}


def test_a_resumed_run_keeps_what_it_inferred(text_only_run):
    run, config, _, _ = text_only_run
    before = {p.name: p.read_bytes() for p in (run / "rewards").glob("*") if p.is_file() and p.name != "DONE"}
    messages = []
    train(config, run, resume=True, progress=False, log=messages.append)
    after = {p.name: p.read_bytes() for p in (run / "rewards").glob("*") if p.is_file() and p.name != "DONE"}
    assert after == before and not any(m.startswith("inferred:") for m in messages)


def _corpus(conversations):
    return Corpus(conversations=conversations, knowledge_base=[], report=LoadReport(source="test"))


def _conversation(cid, text, intent=None, split="train"):
    return Conversation(cid, (Turn("customer", "Hello!"), Turn("customer", text), Turn("agent", "Sure.")),
                        intent=intent, split=split)  # fmt: skip


def test_partly_labelled_logs_extend_their_labels(encoder):
    labelled = [
        _conversation("a", "My card was stolen, block it please", "card_theft"),
        _conversation("b", "Someone took my credit card from my bag", "card_theft"),
        _conversation("c", "What will the weather be in Boston tomorrow", "weather"),
        _conversation("d", "Is it going to rain in Denver this weekend", "weather"),
    ]
    unlabelled = [_conversation("e", "I lost my card, it was stolen on the bus"),
                  _conversation("f", "Will it be sunny in Seattle on Friday?", split="test")]  # fmt: skip
    conversations, intents, record = infer_intents(
        _corpus(labelled + unlabelled), encoder, intents_file=None, max_intents=10, seed=0
    )
    assert [c.intent for c in conversations] == ["card_theft"] * 2 + ["weather"] * 2 + ["card_theft", "weather"]
    assert record["logged"] == 4 and record["inferred"] == 2 and "semi-supervised" in record["source"]
    assert sorted(i["name"] for i in intents) == ["card_theft", "weather"]


def test_a_names_only_intents_file_labels_the_logs_zero_shot(encoder, tmp_path):
    path = tmp_path / "intents.json"
    path.write_text(json.dumps({"intents": [
        {"name": "report_stolen_card", "description": "the customer's card was lost or stolen"},
        {"name": "weather_forecast", "description": "the weather forecast for a city and day"},
    ]}))  # fmt: skip
    logs = [_conversation("e", "I lost my card, it was stolen on the bus"), _conversation("f", "Will it rain?")]
    conversations, _, record = infer_intents(_corpus(logs), encoder, intents_file=str(path), max_intents=10, seed=0)
    assert [c.intent for c in conversations] == ["report_stolen_card", "weather_forecast"]
    assert record["source"] == f"the intents file {path}"


def test_logged_labels_are_kept_as_they_are(encoder):
    logs = [_conversation("a", "My card was stolen", "card_theft")]
    conversations, intents, record = infer_intents(_corpus(logs), encoder, intents_file=None, max_intents=10, seed=0)
    assert conversations == logs and intents is None and record["source"] == "logged labels"


def test_the_need_skips_greetings():
    assert conversation_need(_conversation("a", "My card was stolen")) == "My card was stolen"
    only_hello = Conversation("b", (Turn("customer", "Hi"), Turn("agent", "Hello")))
    assert conversation_need(only_hello) == "Hi"


def test_a_hand_edited_intents_file_labels_the_logs(encoder, tmp_path):
    """Discovered card_theft and card_declined merged into one renamed intent; an order_refund intent deleted."""
    path = tmp_path / "intents.json"
    path.write_text(json.dumps({"intents": [
        {"name": "card_problem", "description": "merged by hand", "size": 4,
         "examples": ["My card was stolen", "Someone took my credit card", "My card was declined at the shop",
                      "The card payment keeps failing"]},
        {"name": "weather", "description": "", "size": 2,
         "examples": ["Will it rain in Boston tomorrow?", "Is it sunny in Denver this weekend?"]},
    ]}))  # fmt: skip
    logs = [_conversation("a", "I lost my card on the bus, it was stolen"),
            _conversation("b", "Why was my card declined when I paid for groceries?"),
            _conversation("c", "What's the weather going to be like in Seattle on Friday?", split="test"),
            _conversation("d", "I want my money back for the broken blender")]  # fmt: skip
    conversations, intents, record = infer_intents(
        _corpus(logs), encoder, intents_file=str(path), max_intents=10, seed=0
    )
    assert [c.intent for c in conversations[:3]] == ["card_problem", "card_problem", "weather"]
    assert conversations[3].intent in {"card_problem", "weather"}  # a deleted intent's texts go to a kept one
    assert [i["name"] for i in intents] == ["card_problem", "weather"] and record["inferred"] == 4


def test_discovery_clusters_a_sample_of_long_logs_and_assigns_the_rest(encoder, monkeypatch):
    texts = ["My card was stolen, block it please", "Someone took my credit card from my bag",
             "I lost my card on the bus", "What will the weather be in Boston tomorrow",
             "Is it going to rain in Denver this weekend", "Will it be sunny in Seattle on Friday?",
             "my bank card is gone, I think it was stolen", "how cold will it be in Chicago tonight"]  # fmt: skip
    logs = [_conversation(str(i), text) for i, text in enumerate(texts)]
    clustered = []
    real = __import__("csrl.rewards.discovery", fromlist=["discover_intents"]).discover_intents

    def spy(needs, *args, **kwargs):
        clustered.extend(needs)
        return real(needs, *args, **kwargs)

    monkeypatch.setattr("csrl.dialogue.pipeline.inference.MAX_DISCOVERY_CONVERSATIONS", 6)
    monkeypatch.setattr("csrl.rewards.discovery.discover_intents", spy)
    conversations, intents, record = infer_intents(_corpus(logs), encoder, intents_file=None, max_intents=4, seed=0)
    assert len(clustered) == 6 and record["inferred"] == 8 and all(c.intent for c in conversations)
    assert record["source"].startswith("intent discovery on 6 training conversations")
    assert {c.intent for c in conversations} <= {i["name"] for i in intents}
