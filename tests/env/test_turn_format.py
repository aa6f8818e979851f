"""The process format: total parsing of an agent turn, and writing one back."""

import pytest

from csrl.env.turn_format import format_agent_turn, parse_agent_turn, render_results

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
    text = format_agent_turn("weather", "Sunny, 30 °C.", search="weather City=Köln", results=render_results([]))
    parsed = parse_agent_turn(text)
    assert (parsed.intent, parsed.search, parsed.reply, parsed.well_formed) == (
        "weather",
        "weather City=Köln",
        "Sunny, 30 °C.",
        True,
    )
