"""A knowledge base from the logs' own agent answers: which answers count, de-duplication, intents."""

import pytest

from csrl.data.schema import Conversation, Turn
from csrl.rewards.answer_kb import answer_documents, content_words, is_informative_answer


@pytest.mark.parametrize(
    "text, informative",
    [
        ("Your card has been blocked and a replacement ships in three days.", True),
        ("Sure, your balance is 40 dollars and the last payment cleared yesterday.", True),
        ("Hello, how can I help you today?", False),  # a question back
        ("Could I get your full name, please?", False),
        ("Thank you for contacting us, have a nice day!", False),  # small talk
        ("Okay.", False),
        ("One moment please.", False),
        ("", False),
        ("The store opens at nine.", False),  # too little: store, opens, nine
        ("The downtown store opens at nine on weekdays.", True),
    ],
)
def test_which_agent_messages_are_answers(text, informative):
    assert is_informative_answer(text) is informative, content_words(text)


def _conversation(cid, intent, *answers):
    turns = []
    for answer in answers:
        turns += [Turn("customer", "I have a question"), Turn("agent", answer)]
    return Conversation(cid, tuple(turns), intent=intent)


def test_repeats_and_rephrasings_become_one_document_with_the_majority_intent(encoder):
    refund = "Your refund of the order was issued and reaches your card within five business days."
    conversations = [
        _conversation("a", "refund", refund, "Hello, anything else?"),
        _conversation("b", "refund", refund),
        _conversation(
            "c", "refund", "Your refund for the order was issued and reaches your card in five business days."
        ),
        _conversation("d", "shipping", "Your parcel left our warehouse today and arrives on Friday by courier."),
        _conversation("e", None, refund.upper()),  # the same answer, shouted: one normalised text
    ]
    documents = answer_documents(conversations, encoder, similarity=0.9)
    assert len(documents) == 2
    first, second = documents
    assert first.text == refund  # the phrasing agents used most
    assert first.intent == "refund" and first.title == "refund"
    assert second.intent == "shipping" and second.id.startswith("answer-")
    assert answer_documents(conversations, encoder, similarity=1.0)[0].text == refund


def test_logs_without_answers_ask_for_a_kb(encoder):
    with pytest.raises(ValueError, match="no informative agent answer .* pass --kb"):
        answer_documents([_conversation("a", None, "Hi!", "Could I get your name?")], encoder)
    with pytest.raises(ValueError, match=r"similarity=0: expected a cosine in \(0, 1\]"):
        answer_documents([], encoder, similarity=0)
