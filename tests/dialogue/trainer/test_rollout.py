"""Batched multi-turn rollouts: what is the policy's (action mask), where stage rewards land, transcripts, summaries."""

import copy
import re

import pytest
import torch
from support import (
    GENERATION,
    POLICY_KB,
    KeywordSearcher,
    build_taught_policy,
    make_envs,
)

from csrl.dialogue.evaluation.playback import play_episodes, play_human_episodes
from csrl.dialogue.models.prompts import results_text
from csrl.dialogue.trainer.buffer import TrajectoryBuffer
from csrl.dialogue.trainer.credit import stage_positions
from csrl.dialogue.trainer.generation import GeneratedTurn
from csrl.dialogue.trainer.rollout import collect_rollouts
from csrl.rewards.composite import CompositeReward
from csrl.rewards.rules import LengthReward

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def taught_policy():
    return build_taught_policy()


@pytest.fixture
def policy(taught_policy):
    return copy.deepcopy(taught_policy)


@pytest.fixture(scope="module")
def rollout(taught_policy):
    envs = make_envs(n=3, max_turns=2)
    policy = copy.deepcopy(taught_policy)
    with torch.no_grad():
        policy.value_head.bias.fill_(0.25)  # the head starts at 0; a visible V(s) for the bootstrap checks
    buffer, stats = collect_rollouts(policy, copy.deepcopy(policy), envs, GENERATION, seed=0)
    return buffer, stats


def test_action_mask_excludes_prompt_and_inserted_results(rollout, taught_policy):
    buffer, stats = rollout
    tokenizer = taught_policy.tokenizer
    searched = [r for r in buffer if 0 in r.action_mask]
    assert searched, "the taught policy searches"
    for record in buffer:
        assert len(record.response_ids) == len(record.action_mask) == len(record.logprobs) == len(record.values)
        assert record.state == tokenizer.decode(record.query_ids) and record.state.endswith("agent:\n")
        assert record.action_mask[0] == 1, "the prompt is not in the response: the turn starts with a policy token"
        for name in ("logprobs", "values", "ref_logprobs"):
            off = [v for v, m in zip(getattr(record, name), record.action_mask, strict=True) if not m]
            assert off == [0.0] * len(off), name
        assert all(lp < 0 for lp, m in zip(record.logprobs, record.action_mask, strict=True) if m)
        assert record.ref_logprobs == pytest.approx(record.logprobs), "reference = the starting policy"
    for record in searched:
        inserted = [t for t, m in zip(record.response_ids, record.action_mask, strict=True) if not m]
        first = record.action_mask.index(0)
        policy_part = tokenizer.decode(record.response_ids[:first])
        assert re.search(r"(^|\n)search:[^\n]*\n$", policy_part), "results come right after the search line"
        assert tokenizer.decode(inserted).startswith("results: ") and tokenizer.decode(inserted).endswith("\n")
        query = policy_part.split("search:")[-1].strip()
        documents = [d for d, _ in KeywordSearcher(POLICY_KB).search([query], 3)[0]]
        assert tokenizer.decode(inserted) == results_text(documents, GENERATION.results_char_budget)
        assert record.action_mask[-1] == 1, "the policy writes its reply after the results"
    assert stats.turns == len(buffer) and stats.generated_tokens == sum(sum(r.action_mask) for r in buffer)


def test_episodes_end_terminated_or_truncated_with_a_bootstrap(rollout):
    buffer, _ = rollout
    for episode in buffer.episodes():
        assert [r.turn_index for r in episode] == list(range(len(episode)))
        assert all(not r.done and not r.truncated for r in episode[:-1])
        last = episode[-1]
        assert last.done != last.truncated
        if last.truncated:  # V of the next prompt: the bias alone, as the head's weights are still 0
            assert len(episode) == 2 and last.bootstrap_value == pytest.approx(0.25)
        else:
            assert last.bootstrap_value == 0.0


@pytest.mark.parametrize("credit", ["process", "turn"])
def test_stage_rewards_land_on_their_step(policy, credit):
    envs = make_envs(n=2, max_turns=1)
    buffer, _ = collect_rollouts(policy, policy, envs, GENERATION, seed=1, credit=credit)
    tokenizer = policy.tokenizer
    for record in buffer:
        assert sum(record.token_rewards) == pytest.approx(record.reward)
        assert all(r == 0 for r, m in zip(record.token_rewards, record.action_mask, strict=True) if not m)
        positions = record.stage_token_index
        if credit == "turn":
            assert record.token_rewards[-1] == pytest.approx(record.reward)
            continue
        expected = [0.0] * len(record.response_ids)
        retrieval_step = "search" if "search" in positions else "reply"
        for stage, step in (("intent", "intent"), ("retrieval", retrieval_step), ("satisfaction", "reply")):
            expected[positions.get(step, len(expected) - 1)] += record.stage_rewards[stage]
        assert record.token_rewards == pytest.approx(expected)
        if "intent" in positions:  # the intent stage's token closes the intent line
            upto = tokenizer.decode(record.response_ids[: positions["intent"] + 1])
            assert re.search(r"(^|\n)intent:[^\n]*$", upto.rstrip("\n"))


def test_stage_positions_of_a_known_turn(policy):

    tokenizer = policy.tokenizer
    pieces = [
        ("intent: weather\nsearch: weather Detroit\n", 1),
        ("results: [1] weather: sunny\n", 0),
        ("reply: Sunny.", 1),
    ]
    ids, mask = [], []
    for text, owner in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [owner] * len(piece)
    ids.append(tokenizer.eos_token_id)
    mask.append(1)
    turn = GeneratedTurn([1], ids, mask, tokenizer.decode(ids[:-1]), "")
    positions = stage_positions(tokenizer, turn)
    assert tokenizer.decode(ids[: positions["intent"] + 1]).rstrip("\n") == "intent: weather"
    assert tokenizer.decode(ids[: positions["search"] + 1]).rstrip("\n").endswith("search: weather Detroit")
    assert positions["reply"] == len(ids) - 2, "the reply's last token, before eos"


def test_play_episodes_and_the_human_reference_share_conversations(policy):
    envs = make_envs(n=2, max_turns=3, reward=CompositeReward({"length": LengthReward()}, {"length": 1.0}))
    played = play_episodes(policy, envs, episodes=3, seed=5, greedy=True, policy_config=GENERATION)
    human = play_human_episodes(envs, episodes=3, seed=5)
    assert [e["conversation_id"] for e in played] == [e["conversation_id"] for e in human]
    keys = {"turn", "customer", "prompt", "action", "intent", "search", "results", "reply", "reward", "components",
            "weighted", "sentiment"}  # fmt: skip
    for episode in played + human:
        assert set(episode) == {"conversation_id", "intent", "turns", "mean_reward", "return", "terminated",
                                "truncated", "customer_left"}  # fmt: skip
        assert episode["terminated"] != episode["truncated"]
        assert [t["turn"] for t in episode["turns"]] == list(range(len(episode["turns"])))
        assert all(set(t) == keys for t in episode["turns"])
        assert episode["turns"][0]["customer"], "the customer opens the conversation"
        assert episode["return"] == pytest.approx(sum(t["reward"] for t in episode["turns"]))
    assert all(e["mean_reward"] == 1.0 for e in human), "logged replies have a fine length"
    c1 = next(e for e in human if e["conversation_id"] == "c1")
    assert c1["turns"][1]["search"] == "weather Detroit" and c1["turns"][1]["results"] == ["k-weather"]
    assert c1["turns"][1]["customer"] == ["Tuesday please"]
    again = play_episodes(policy, envs, episodes=3, seed=5, greedy=True, policy_config=GENERATION)
    assert again == played


def test_rollout_buffer_round_trips_through_parquet(rollout, tmp_path):
    buffer, _ = rollout
    loaded = TrajectoryBuffer.load(buffer.save(tmp_path / "buffers" / "iter_0001.parquet"))
    assert loaded == buffer
    assert loaded.records[0].components and loaded.records[0].token_rewards


def test_constrain_intent_makes_the_taught_policy_declare_a_catalogue_intent(policy):
    import dataclasses

    from csrl.dialogue.trainer.generation import generate_turns

    envs = make_envs(n=2, max_turns=1)
    envs.reset(seeds=[0, 1])
    policy.intents = ["fraud"]  # the taught policy always writes "intent: weather"
    intents = {}
    for constrain in (False, True):
        config = dataclasses.replace(GENERATION, constrain_intent=constrain)
        turns = generate_turns(policy, envs, [0, 1], config, temperature=0)
        # the constraint decides the first line; what the tiny model writes after it varies with the CPU's numerics
        intents[constrain] = [t.action.split("\n", 1)[0] for t in turns]
    assert "intent: weather" in intents[False] and "intent: fraud" not in intents[False]
    assert intents[True] == ["intent: fraud", "intent: fraud"]
