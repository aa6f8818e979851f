"""The process format seen from the policy: prompts, the search pause, the results block, SFT examples."""

import pytest

from csrl.data.schema import Conversation, KBDocument, Turn
from csrl.dialogue.models.prompts import (
    AGENT_TURN_START,
    SEARCH_PAUSE,
    build_prompt,
    conversation_to_examples,
    corpus_to_examples,
    policy_segments,
    results_text,
)
from csrl.env.turn_format import parse_agent_turn, render_dialogue

GOOD = (
    "intent: bank_fraud_report\nsearch: report fraud on card for Sam Lee\n"
    "results: [1] fraud procedure: Ask for the account number.\nreply: Could I get your account number, please?"
)


def test_search_pause_fires_only_after_the_search_line_ends():
    assert SEARCH_PAUSE.search("intent: x\nsearch: weather Day=Monday\n")
    assert SEARCH_PAUSE.search("search: q\n")
    assert not SEARCH_PAUSE.search("intent: x\nsearch: weather Day=Mon")
    assert not SEARCH_PAUSE.search("intent: x\nreply: let me search: it\n")


def test_policy_segments_join_back_and_own_the_results_block():
    pieces = policy_segments(GOOD)
    assert "".join(text for text, _ in pieces) == GOOD
    assert [owner for _, owner in pieces] == ["policy", "environment", "policy"]
    assert pieces[1][0] == "results: [1] fraud procedure: Ask for the account number.\n"
    assert policy_segments("intent: x\nreply: y") == [("intent: x\nreply: y", "policy")]


def test_build_prompt_is_the_observation_plus_the_agent_turn_start():
    history = [Turn("customer", "Hi there"), Turn("agent", "Hello!", intent="greet"), Turn("customer", "Ça va?")]
    assert build_prompt(history) == render_dialogue(history) + "\n" + AGENT_TURN_START
    assert build_prompt(history) == "customer: Hi there\nagent: Hello!\ncustomer: Ça va?\nagent:\n"


def test_results_text_truncates_to_the_budget():
    docs = [KBDocument(f"k{i}", "word " * 200, f"doc {i}") for i in range(3)]
    text = results_text(docs, char_budget=300)
    assert text.startswith("results: [1] doc 0: word") and text.endswith("\n") and "\n" not in text[:-1]
    assert len(text) < 400


def test_conversation_to_examples_writes_processes():
    lookups = (
        Turn("tool", query="weather City=Paris", results=()),
        Turn("tool", query="weather City=Detroit", results=(KBDocument("k1", "Sunny.", "weather record"),)),
    )
    conv = Conversation(
        id="c9",
        intent="weather",
        turns=(
            Turn("customer", "Weather in Detroit?"),
            *lookups,
            Turn("agent", "It is  sunny.", intent="weather"),
            Turn("agent", "Anything else?"),  # consecutive agent messages: two turns; no label -> conversation's
            Turn("customer", "No, thanks"),
            Turn("agent", "Goodbye.", intent="weather"),
        ),
    )
    examples = conversation_to_examples(conv)
    assert [e["turn_index"] for e in examples] == [3, 4, 6]
    assert examples[0]["prompt"] == "customer: Weather in Detroit?\nagent:\n"
    # the last lookup before the reply is the turn's search; the earlier one is not the policy's
    assert examples[0]["completion"] == (
        "intent: weather\nsearch: weather City=Detroit\nresults: [1] weather record: Sunny.\nreply: It is sunny."
    )
    assert examples[1]["prompt"] == (
        "customer: Weather in Detroit?\nresults: [1] weather record: Sunny.\nagent: It is sunny.\nagent:\n"
    )
    assert examples[1]["completion"] == "intent: weather\nreply: Anything else?"
    assert examples[2]["prompt"].endswith("agent: Anything else?\ncustomer: No, thanks\nagent:\n")
    assert [e["searched"] for e in examples] == [True, False, False]
    for example in examples:
        assert parse_agent_turn(example["completion"]).well_formed


def test_star_examples_parse_and_match_logged_labels(star_corpus):
    conversations = [c for c in star_corpus.conversations if c.split == "train"][:40]
    examples = corpus_to_examples(conversations)
    agent_turns = sum(1 for c in conversations for t in c.turns if t.role == "agent")
    assert len(examples) == agent_turns
    searched = [e for e in examples if e["searched"]]
    assert searched, "STAR agents look things up"
    for example in examples:
        parsed = parse_agent_turn(example["completion"])
        assert parsed.well_formed, (example["completion"], parsed.problems)
        assert parsed.intent == example["intent"]
        assert (parsed.search is not None) == example["searched"]
        assert example["prompt"].endswith(AGENT_TURN_START)


def test_corpus_to_examples_rejects_bad_limit():
    with pytest.raises(ValueError, match="limit=0"):
        corpus_to_examples([], limit=0)
