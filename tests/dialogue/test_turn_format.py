"""The process format seen from the policy: total parsing, prompts, the search pause, SFT examples."""

import pytest

from csrl.data.schema import Conversation, KBDocument, Turn
from csrl.dialogue.models.prompts import (
    AGENT_TURN_START,
    SEARCH_PAUSE,
    build_prompt,
    conversation_to_examples,
    corpus_to_examples,
    format_agent_turn,
    parse_agent_turn,
    policy_segments,
    render_dialogue,
    results_text,
)

GOOD = (
    "intent: bank_fraud_report\nsearch: report fraud on card for Sam Lee\n"
    "results: [1] fraud procedure: Ask for the account number.\nreply: Could I get your account number, please?"
)

# (text, intent, search, reply, well_formed, problems)
PARSE_TABLE = [
    pytest.param(
        GOOD,
        "bank_fraud_report",
        "report fraud on card for Sam Lee",
        "Could I get your account number, please?",
        True,
        (),
        id="good-with-search",
    ),
    pytest.param("intent: weather\nreply: Sunny.", "weather", None, "Sunny.", True, (), id="good-no-search"),
    pytest.param(
        "intent: weather\nsearch: weather Day=Monday\n",
        "weather",
        "weather Day=Monday",
        "",
        False,
        ("no reply: line",),
        id="missing-reply",
    ),
    pytest.param("", None, None, "", False, ("no reply: line", "no intent: line"), id="empty"),
    pytest.param("   \n ", None, None, "", False, ("no reply: line", "no intent: line"), id="whitespace"),
    pytest.param(
        "@@##!! random",
        None,
        None,
        "",
        False,
        ("no reply: line", "no intent: line", "ignored text: '@@##!! random'"),
        id="garbage",
    ),
    pytest.param(
        "intent: a\nintent: b\nreply: one\nreply: two",
        "a",
        None,
        "one",
        False,
        ("repeated intent: line", "repeated reply: line"),
        id="repeated-keys-first-wins",
    ),
    pytest.param(
        "intent: bank_balance\nreply: Grüße! Kontostand: 1.000 € 🙂 東京",
        "bank_balance",
        None,
        "Grüße! Kontostand: 1.000 € 🙂 東京",
        True,
        (),
        id="non-ascii",
    ),
    pytest.param("intent: x\r\nreply: y\r\n", "x", None, "y", True, (), id="crlf"),
    pytest.param(
        "intent: x\nreply: first line\nsecond line",
        "x",
        None,
        "first line\nsecond line",
        True,
        (),
        id="multi-line-reply",
    ),
    pytest.param("intent:\nreply: hi", None, None, "hi", False, ("no intent: line",), id="empty-intent"),
    pytest.param("intent: x\nsearch:\nreply: hi", "x", None, "hi", False, ("empty search: line",), id="empty-search"),
    pytest.param("hello\nintent: x\nreply: y", "x", None, "y", False, ("ignored text: 'hello'",), id="preamble"),
]


@pytest.mark.parametrize("text, intent, search, reply, well_formed, problems", PARSE_TABLE)
def test_parse_agent_turn_table(text, intent, search, reply, well_formed, problems):
    parsed = parse_agent_turn(text)
    assert (parsed.intent, parsed.search, parsed.reply) == (intent, search, reply)
    assert parsed.well_formed is well_formed
    assert parsed.problems == problems


@pytest.mark.parametrize("value", [None, 42, b"intent: x", "\x00\x01\x02", "reply:" * 1000, "\n" * 50, "🙂" * 300])
def test_parse_is_total(value):
    parsed = parse_agent_turn(value)
    assert isinstance(parsed.reply, str)
    assert isinstance(parsed.problems, tuple)


def test_format_then_parse_round_trips():
    text = format_agent_turn("weather", "Sunny, 30 °C.", search="weather City=Köln", results=results_text([])[:-1])
    parsed = parse_agent_turn(text)
    assert (parsed.intent, parsed.search, parsed.reply, parsed.well_formed) == (
        "weather",
        "weather City=Köln",
        "Sunny, 30 °C.",
        True,
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
