"""The retrieval reward stage: relevance of the knowledge a turn used to the customer's need."""

import dataclasses

import pytest
from support import KB, RESTAURANTS, kb_conversations

from csrl.data.schema import KBDocument, Turn
from csrl.rewards.context import TurnContext
from csrl.rewards.retrieval import RetrievalReward
from csrl.rewards.search.retriever import HybridRetriever


@pytest.fixture(scope="module")
def retriever(encoder):
    return HybridRetriever(KB, encoder, candidates=5)


# -- the reward stage -------------------------------------------------------------------------


def context(reply, knowledge=None, messages=("Will it rain in Boston on Friday? I have a picnic.",)):
    history = tuple(Turn("customer", m) for m in messages)
    return TurnContext(history=history, reply=reply, knowledge=knowledge)


def test_reward_prefers_relevant_knowledge(retriever):
    reward = RetrievalReward(retriever)
    cases = {
        "relevant knowledge": context("Yes, it will be raining in Boston on Friday.", (KB[3],)),
        "relevant reply, no search": context("Friday in Boston: raining, so take an umbrella to the picnic."),
        "irrelevant knowledge": context("Ginza is an expensive Japanese restaurant.", (RESTAURANTS[1],)),
        "irrelevant reply": context("Ginza is an expensive Japanese restaurant."),
        "generic": context("ok"),
        "empty": context(""),
        "parrot": context("Will it rain in Boston on Friday? I have a picnic."),
        "searched, found nothing": context("Sorry, I found nothing.", ()),
        "no customer message yet": context("Raining in Boston on Friday.", (KB[3],), messages=()),
    }
    scores = dict(zip(cases, reward.score(list(cases.values())), strict=True))
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    for good in ("relevant knowledge", "relevant reply, no search"):
        for bad in ("irrelevant knowledge", "irrelevant reply", "generic", "empty", "parrot"):
            assert scores[good] > scores[bad], (good, bad, scores)
    assert scores["relevant knowledge"] > 0.5
    assert scores["parrot"] == scores["empty"] == scores["searched, found nothing"] == 0.0
    assert scores["no customer message yet"] == 0.0
    assert scores["generic"] < 0.2
    assert reward.score([]) == []


def test_reward_scores_documents_outside_the_kb(retriever):
    reward = RetrievalReward(retriever)
    sent = KBDocument("live-1", "Forecast for Boston, Friday: heavy rain.", "bot forecast")
    other = dataclasses.replace(sent, id="live-2", text="Our store opens at 9am on weekdays.")
    good, bad = reward.score([context("Rain on Friday.", (sent,)), context("We open at 9.", (other,))])
    assert good > bad


def test_reward_fit_save_load(retriever, tmp_path):
    reward = RetrievalReward(retriever, need_messages=2)
    cal = reward.fit(kb_conversations(), negatives=3)
    assert cal.w_cosine + cal.w_bm25 > 0
    reward.save(tmp_path)
    loaded = RetrievalReward.load(tmp_path, retriever)
    assert loaded.need_calibration == cal and loaded.need_messages == 2
    ctxs = [context("Raining in Boston.", (KB[3],)), context("ok")]
    assert loaded.score(ctxs) == reward.score(ctxs)
    with pytest.raises(ValueError, match="need_messages=0"):
        RetrievalReward(retriever, need_messages=0)
