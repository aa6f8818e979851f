"""Batched multi-turn rollouts: what is the policy's (action mask), where stage rewards land, transcripts, summaries."""

import copy
import re

import gymnasium as gym
import pytest
import torch
import torch.nn.functional as F
from search_doubles import KeywordSearcher

from csrl.data import Conversation, KBDocument, Turn
from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.policy import ActorCritic
from csrl.dialogue.models.prompts import results_text
from csrl.dialogue.models.tokenizer import train_tokenizer_on_corpus
from csrl.dialogue.trainer.buffer import TrajectoryBuffer
from csrl.dialogue.evaluation.playback import play_episodes, play_human_episodes
from csrl.dialogue.trainer.credit import stage_positions
from csrl.dialogue.trainer.generation import GeneratedTurn
from csrl.dialogue.trainer.rollout import collect_rollouts
from csrl.dialogue.trainer.sft import tokenize_example
from csrl.env import ENV_ID, LockstepEnvs
from csrl.rewards.composite import CompositeReward
from csrl.rewards.rules import FormatReward, LengthReward

KB = [
    KBDocument("k-fraud", "Report card fraud: we need your full name and account number.", "fraud", "fraud"),
    KBDocument("k-weather", "Weather forecast for Detroit: sunny, 25 degrees.", "weather", "weather"),
]
TAUGHT_TURN = "intent: weather\nsearch: weather Detroit\nresults: [1] weather: sunny\nreply: Sunny all day in Detroit."
GENERATION = PolicyConfig.preset("debug", vocab_size=400, max_new_tokens=40, results_char_budget=80)


pytestmark = pytest.mark.usefixtures("one_thread")


def conversations():
    return [
        Conversation(
            id="c1",
            intent="weather",
            turns=(
                Turn("customer", "Weather in Detroit?"),
                Turn("agent", "Which day?", intent="weather"),
                Turn("customer", "Tuesday please"),
                Turn("tool", query="weather Detroit", results=(KB[1],)),
                Turn("agent", "Sunny all day in Detroit.", intent="weather"),
                Turn("customer", "Thanks!"),
                Turn("agent", "You're welcome.", intent="weather"),
            ),
        ),
        Conversation(
            id="c2",
            intent="fraud",
            turns=(
                Turn("customer", "Someone used my card! 💳"),
                Turn("agent", "Could I get your full name, please?", intent="fraud"),
                Turn("customer", "Sam Lee"),
                Turn("agent", "Your report has been submitted.", intent="fraud"),
            ),
        ),
    ]


def stage_reward():
    """Rule components standing in for the three stages, so each stage's placement can be seen."""
    return CompositeReward(
        {"intent": FormatReward(), "retrieval": LengthReward(), "satisfaction": LengthReward()},
        {"intent": 0.3, "retrieval": 0.5, "satisfaction": 0.2},
    )


def make_envs(n=2, max_turns=3, reward=None):
    reward = reward or stage_reward()
    searcher = KeywordSearcher(KB)
    envs = [gym.make(ENV_ID, conversations=conversations(), reward=reward, searcher=searcher) for _ in range(n)]
    return LockstepEnvs(envs, max_turns=max_turns)


def build_taught_policy():
    """A debug GPT-2 over a tokenizer trained on the conversations, taught to write TAUGHT_TURN (it then searches)."""
    tokenizer = train_tokenizer_on_corpus(conversations() * 5, vocab_size=400, model_max_length=256)
    policy = ActorCritic.from_config(tokenizer, GENERATION)
    row = tokenize_example(tokenizer, "customer: Weather in Detroit?\nagent:\n", TAUGHT_TURN, 256)
    input_ids = torch.tensor([row["input_ids"]])  # (1, T)
    mask = torch.tensor([row["completion_mask"]])[:, 1:].float()  # (1, T-1)
    optimizer = torch.optim.Adam(policy.lm.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        logits = policy.lm(input_ids=input_ids).logits[:, :-1]  # (1, T-1, V)
        nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (1, T-1)
        loss = (nll * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy.eval()


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
        documents = [d for d, _ in KeywordSearcher(KB).search([query], 3)[0]]
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
