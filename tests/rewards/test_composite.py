import dataclasses

import numpy as np
import pytest

from csrl.data import Conversation, Turn
from csrl.rewards.composite import CompositeReward
from csrl.rewards.config import RewardConfig
from csrl.rewards.context import TurnContext, contexts_from_conversation
from csrl.rewards.integrity import NEGATIVES, build_integrity_pairs, integrity_check
from csrl.rewards.rules import LengthReward
from csrl.rewards.satisfaction_labels import GARBLINGS, garble


class Table:
    """A component whose score is looked up by reply (exact values for arithmetic tests)."""

    def __init__(self, values):
        self.values = values

    def score(self, contexts):
        return [self.values[c.reply] for c in contexts]


# (intent raw, retrieval raw, satisfaction raw) -> total with the default weights 0.3 / 0.5 / 0.2
COMPOSITE_TABLE = [
    ((1.0, 1.0, 1.0), 1.0),
    ((-1 / 3, 0.0, 0.0), -0.1),
    ((1.0, 0.0, 0.0), 0.3),
    ((-1 / 3, 1.0, 1.0), 0.6),
    ((1.0, 0.5, 0.25), 0.6),
    ((1.0, 0.8, 0.9), 0.88),
]


@pytest.mark.parametrize(("raw", "total"), COMPOSITE_TABLE)
def test_composite_arithmetic(raw, total):
    weights = {k: v for k, v in RewardConfig().weights.items() if v}
    reward = CompositeReward({name: Table({"r": value}) for name, value in zip(weights, raw, strict=True)}, weights)
    (result,) = reward.score([TurnContext(history=(), reply="r")])
    assert result.total == pytest.approx(total)
    assert result.components == pytest.approx(dict(zip(weights, raw, strict=True)))
    assert result.weighted["intent"] == pytest.approx(0.3 * raw[0])
    assert result.to_dict()["reward"] == pytest.approx(total)


def test_zero_weight_components_are_reported_but_add_nothing():
    reward = CompositeReward({"a": Table({"r": 1.0}), "length": LengthReward()}, {"a": 1.0, "length": 0.0})
    (result,) = reward.score([TurnContext(history=(), reply="r")])
    assert result.total == 1.0 and result.components["length"] == 0.5
    skipping = CompositeReward(
        {"a": Table({"r": 1.0}), "length": LengthReward()}, {"a": 1.0, "length": 0.0}, skip_zero_weight=True
    )
    assert "length" not in skipping.score([TurnContext(history=(), reply="r")])[0].components


def test_weights_must_match_components():
    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['c'\]"):
        CompositeReward({"a": LengthReward(), "b": LengthReward()}, {"a": 1.0, "c": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intent_weight": -0.3}, "intent_weight=-0.3 is negative"),
        ({"intent_weight": 0, "retrieval_weight": 0, "satisfaction_weight": 0}, "all reward weights are 0"),
        ({"max_seq_length": 4}, "max_seq_length=4 is too short"),
    ],
)
def test_reward_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)


def _conv(cid, intent, replies):
    turns = []
    for i, reply in enumerate(replies):
        turns += [Turn("customer", f"{intent} question {i}"), Turn("agent", reply, intent=intent)]
    return Conversation(id=cid, intent=intent, turns=tuple(turns))


def test_contexts_from_conversation_attach_knowledge_and_gold_intent(star_corpus):
    conv = next(c for c in star_corpus.conversations if any(t.role == "tool" and t.results for t in c.turns))
    contexts = contexts_from_conversation(conv)
    assert len(contexts) == sum(t.role == "agent" for t in conv.turns)
    searched = [c for c in contexts if c.search_query]
    assert searched and all(c.knowledge is not None for c in searched)
    assert all(c.gold_intent == c.declared_intent for c in contexts)


def test_integrity_pairs_and_a_reward_that_knows_the_real_reply():
    convs = [
        _conv("a", "weather", ["Sunny today.", "Anything else?"]),
        _conv("b", "bank", ["Your balance is 5.", "Bye."]),
    ]
    pairs = build_integrity_pairs(convs, max_turns=10, seed=0)
    assert set(pairs) == set(NEGATIVES)
    real, parrot = pairs["parrot"][0]
    assert parrot.reply == real.customer_messages()[-1]
    other_conversation = {"weather": {"Your balance is 5.", "Bye."}, "bank": {"Sunny today.", "Anything else?"}}
    assert pairs["other_intent"] and all(
        neg.reply in other_conversation[r.gold_intent] for r, neg in pairs["other_intent"]
    )
    assert all(real.declared_intent != neg.declared_intent for real, neg in pairs["wrong_intent"])

    real_replies = {"Sunny today.", "Anything else?", "Your balance is 5.", "Bye."}

    class KnowsTheLog:
        def score(self, contexts):
            return [float(c.reply in real_replies and c.declared_intent == c.gold_intent) for c in contexts]

    result = integrity_check(CompositeReward({"k": KnowsTheLog()}, {"k": 1.0}), convs, max_turns=10)
    assert result["generic"] == {"accuracy": 1.0, "n": 4}
    assert result["wrong_intent"]["accuracy"] == 1.0
    # replies of the same conversation are real replies too: this reward cannot tell them apart
    assert result["same_conversation"]["accuracy"] == 0.5


def test_rude_and_garbled_negatives_keep_the_turns_knowledge_and_intent():
    convs = [
        _conv("a", "weather", ["It will be sunny and warm all day in Detroit.", "Anything else I can do for you?"]),
        _conv("b", "bank", ["Your current balance is five dollars.", "Goodbye and have a nice day."]),
    ]
    without = build_integrity_pairs(convs, max_turns=10, seed=0)
    assert without["rude"] == []  # no complaint in these logs
    complaint = Turn("customer", "This is useless, I already told you that!")
    convs[1] = dataclasses.replace(convs[1], turns=(*convs[1].turns, complaint))
    pairs = build_integrity_pairs(convs, max_turns=10, seed=0)
    assert pairs["rude"] and all(neg.reply == complaint.text for _, neg in pairs["rude"])
    assert len(pairs["garbled"]) == 4
    for real, neg in pairs["rude"] + pairs["garbled"]:
        assert (neg.declared_intent, neg.knowledge, neg.search_query) == (
            real.declared_intent, real.knowledge, real.search_query
        )  # fmt: skip
        assert neg.reply != real.reply
    replies = {kind: [(r.reply, n.reply) for r, n in pairs[kind]] for kind in ("other_intent", "same_conversation")}
    assert replies == {k: [(r.reply, n.reply) for r, n in without[k]] for k in replies}  # the new kinds draw apart


@pytest.mark.parametrize("how", GARBLINGS)
def test_garble_breaks_a_reply_the_way_its_name_says(how):
    text = "Could I have your full name and the account number, please?"
    broken = garble(text, how, np.random.default_rng(3))
    assert broken != text
    if how == "drop":
        assert set(broken.split()) < set(text.split()) and len(broken.split()) == len(text.split()) - 3
    elif how == "shuffle":
        assert sorted(broken.split()) == sorted(text.split())
    else:
        assert len(broken.split()) == len(text.split()) and len(broken) <= len(text)


def test_a_gate_scales_one_component_by_another_and_keeps_the_ungated_score():
    class Const:
        def __init__(self, value):
            self.value = value

        def score(self, contexts):
            return [self.value] * len(contexts)

    stages = {"intent": Const(1.0), "retrieval": Const(0.8), "satisfaction": Const(0.25)}
    weights = {"intent": 0.3, "retrieval": 0.5, "satisfaction": 0.2}
    gated = CompositeReward(stages, weights, gates={"retrieval": "satisfaction"}).score([None])[0]
    assert gated.components["retrieval"] == pytest.approx(0.2) and gated.components["retrieval_ungated"] == 0.8
    assert gated.weighted["retrieval"] == pytest.approx(0.1) and "retrieval_ungated" not in gated.weighted
    assert gated.total == pytest.approx(0.3 + 0.1 + 0.05)
    assert CompositeReward(stages, weights).score([None])[0].total == pytest.approx(0.3 + 0.4 + 0.05)
    with pytest.raises(ValueError, match="gates"):
        CompositeReward(stages, weights, gates={"retrieval": "tone"})
