"""Search steps for SFT on logs without logged lookups: where they go, what they hold, where they do not."""

import dataclasses

import pytest
from support import KB, kb_conversations, text_only_conversations

from csrl.data.schema import Conversation, Turn
from csrl.dialogue.models.prompts import conversation_to_examples
from csrl.dialogue.trainer.search_steps import coverage, search_query, with_search_steps
from csrl.rewards.search.retriever import HybridRetriever


@pytest.fixture(scope="module")
def retriever(encoder):
    return HybridRetriever([dataclasses.replace(d, intent=None) for d in KB], encoder, candidates=5)


def test_query_is_the_customers_content_words_newest_first():
    assert search_query(["I lost my card", "please block it now"], max_words=3) == "block now lost"
    assert search_query(["hi", "thanks"]) == "thanks hi"
    assert search_query(["yes", "no, please"]) == ""


def test_coverage_counts_the_answers_content_words_once():
    assert coverage("card card blocked", "the card") == 0.5
    assert coverage("ok", "anything") == 0.0  # no content words: supports nothing
    assert coverage("Your table is booked", "Table booked!") == 1.0


def test_supported_answers_get_the_search_the_environment_would_run(retriever):
    chat = Conversation(
        "chat",
        (
            Turn("customer", "Someone stole my card"),
            Turn("agent", "Hello, how can I help?"),  # small talk: never a search step
            Turn("customer", "My card, it was stolen"),
            Turn("agent", "To report fraud we block the card and open a case for you."),
        ),
    )
    conversations, counts = with_search_steps([chat, *text_only_conversations()], retriever, k=3)
    roles = [t.role for t in conversations[0].turns]
    assert roles == ["customer", "agent", "customer", "tool", "agent"]
    step = conversations[0].turns[3]
    assert step.query == "card was stolen someone stole"
    assert [d for d, _ in retriever.search([step.query], 3)[0]] == list(step.results)  # what the env would return
    assert "b-fraud" in [d.id for d in step.results]
    assert counts["answers"] == 5 and 0 < counts["search_steps"] <= counts["answers"]
    assert counts["search_steps"] == sum(t.role == "tool" for c in conversations for t in c.turns)

    example = conversation_to_examples(conversations[0])[-1]
    assert example["searched"] and example["completion"].startswith(
        "intent: unknown\nsearch: card was stolen someone stole\n"
    )
    assert "results: " in example["completion"] and example["completion"].endswith(
        "reply: To report fraud we block the card and open a case for you."
    )


def test_logged_lookups_and_unsupported_answers_are_left_alone(retriever):
    logged = kb_conversations()
    out, counts = with_search_steps(logged, retriever)
    assert out == logged and counts == {"answers": 0, "search_steps": 0}
    off_topic = Conversation(
        "x",
        (
            Turn("customer", "Tell me a joke about penguins"),
            Turn("agent", "Penguins wear tuxedos to every single party they attend."),
        ),
    )
    out, counts = with_search_steps([off_topic], retriever)  # no result holds half of its words
    assert out == [off_topic] and counts["answers"] == 1 and counts["search_steps"] == 0
    with pytest.raises(ValueError, match="k=0"):
        with_search_steps([off_topic], retriever, k=0)
