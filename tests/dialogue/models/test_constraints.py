"""The intent constraint: an untrained policy still declares only catalogue intents, and decodes freely after."""

import copy
import dataclasses

import pytest
import torch

from csrl.dialogue.models.constraints import IntentConstraint
from csrl.dialogue.models.policy import ActorCritic
from csrl.dialogue.models.prompts import conversation_to_examples
from csrl.dialogue.models.tokenizer import train_tokenizer
from csrl.dialogue.pipeline.config import TrainConfig
from csrl.env.turn_format import parse_agent_turn

INTENTS = ["plane_book", "plane_search", "weather", "ride_book"]
TEXTS = [f"customer: Hi\nagent:\nintent: {name}\nreply: Where would you like to go?" for name in INTENTS] * 20
PROMPTS = ["customer: Hi\nagent:\n", "customer: I need a flight to Paris on Tuesday, please\nagent:\n"] * 4


@pytest.fixture(scope="module")
def untrained():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    debug = TrainConfig.from_preset("debug").policy
    config = dataclasses.replace(debug, n_embd=32, n_head=2, n_layer=2, n_positions=128, max_new_tokens=24)
    policy = ActorCritic.from_config(tokenizer, config).eval()
    policy.intents = list(INTENTS)
    return policy


def _texts(policy, constrained: bool, seed: int = 0) -> list[str]:
    constraint = IntentConstraint(policy.tokenizer, policy.intents) if constrained else None
    generator = torch.Generator().manual_seed(seed)
    out = policy.generate(*policy.encode(PROMPTS), max_new_tokens=24, temperature=1.0, generator=generator,
                          constraint=constraint)  # fmt: skip
    return out.texts


def test_every_sampled_turn_declares_a_catalogue_intent(untrained):
    free = [parse_agent_turn(t).intent for t in _texts(untrained, constrained=False)]
    assert not any(intent in INTENTS for intent in free)  # a random model writes noise
    for seed in range(3):
        texts = _texts(untrained, constrained=True, seed=seed)
        assert all(t.split("\n", 1)[0].removeprefix("intent: ") in INTENTS for t in texts)
        # after the name's line decoding is free: the untrained model's rows go on differently
        assert len({t.split("\n", 1)[1] for t in texts if "\n" in t}) > 1


def test_greedy_picks_the_likeliest_name_and_logprobs_are_the_masked_distribution(untrained):
    constraint = IntentConstraint(untrained.tokenizer, ["weather"])  # one name: the whole line is forced
    out = untrained.generate(*untrained.encode(PROMPTS[:2]), max_new_tokens=8, temperature=0, constraint=constraint)
    line = untrained.tokenizer("intent: weather\n", add_special_tokens=False)["input_ids"]
    for tokens, logprobs in zip(out.tokens, out.logprobs, strict=True):
        assert tokens[: len(line)] == line
        assert logprobs[: len(line)] == pytest.approx([0.0] * len(line), abs=1e-6)  # a forced token has p = 1


def test_the_lines_match_how_sft_tokenized_the_logged_turns(untrained):
    from csrl.data.schema import Conversation, Turn

    conversation = Conversation(id="c", intent="plane_book", turns=(Turn("customer", "Hi"), Turn("agent", "Hello")))
    completion = conversation_to_examples(conversation)[0]["completion"]
    tokens = untrained.tokenizer(completion, add_special_tokens=False)["input_ids"]
    constraint = IntentConstraint(untrained.tokenizer, INTENTS)
    cut = next(n for n in range(len(tokens) + 1) if constraint.allowed(tokens[:n]) is None)
    assert untrained.tokenizer.decode(tokens[:cut]) == "intent: plane_book\n"


def test_the_catalogue_is_saved_with_the_policy(untrained, tmp_path):
    policy = copy.deepcopy(untrained)
    assert ActorCritic.load(policy.save(tmp_path / "p")).intents == INTENTS
    with pytest.raises(ValueError, match="at least one intent"):
        IntentConstraint(policy.tokenizer, [])
