import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from support import KeywordSearcher

from csrl.data import Conversation, KBDocument, Turn
from csrl.env import ENV_ID, ConversationEnv, EnvConfig, LockstepEnvs, conversation_slots
from csrl.rewards.composite import CompositeReward
from csrl.rewards.rules import FormatReward, LengthReward

KB = [
    KBDocument(
        "k-fraud", "Report card fraud: we need your full name and account number.", "fraud", "bank_fraud_report"
    ),
    KBDocument("k-weather", "Weather forecast for Detroit: sunny, 25 degrees.", "weather", "weather"),
]


def _conversations():
    return [
        Conversation(
            id="c1",
            intent="bank_fraud_report",
            turns=(
                Turn("customer", "Someone used my card! Ünïcödé 💳"),
                Turn("agent", "Could I get your full name, please?", intent="bank_fraud_report"),
                Turn("customer", "Sam Lee"),
                Turn("tool", query="fraud Sam Lee", results=(KB[0],)),
                Turn("agent", "Your report has been submitted.", intent="bank_fraud_report"),
                Turn("customer", "Thanks!"),
            ),
        ),
        Conversation(
            id="c2",
            intent="weather",
            turns=(
                Turn("customer", "Weather in Detroit?"),
                Turn("agent", "Sunny all day.", intent="weather"),
            ),
        ),
    ]


@pytest.fixture
def reward():
    return CompositeReward({"format": FormatReward(), "length": LengthReward()}, {"format": 0.5, "length": 0.5})


def _make(reward, **kwargs):
    return gym.make(ENV_ID, conversations=_conversations(), reward=reward, searcher=KeywordSearcher(KB), **kwargs)


def test_check_env_passes_without_warnings(reward, recwarn):
    env = _make(reward)
    check_env(env.unwrapped, skip_render_check=True)
    assert [str(w.message) for w in recwarn.list if "gymnasium" in str(w.filename)] == []


def test_same_seed_same_rollout(reward):
    def rollout(seed):
        env = _make(reward)
        obs, info = env.reset(seed=seed)
        trace = [(obs["dialogue"], info["conversation_id"])]
        for _ in range(5):
            obs, r, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append((obs["dialogue"], round(r, 6), terminated, truncated))
            if terminated or truncated:
                obs, info = env.reset()
        return trace

    env = _make(reward)
    env.action_space.seed(0)
    assert rollout(7) == rollout(7)


def test_replay_episode_scores_and_ends_with_the_log(reward):
    env = _make(reward)
    obs, info = env.reset(seed=0, options={"conversation_id": "c1"})
    assert obs["dialogue"] == "customer: Someone used my card! Ünïcödé 💳"
    assert info["intent"] == "bank_fraud_report"
    action = env.unwrapped.logged_action()
    assert action == "intent: bank_fraud_report\nreply: Could I get your full name, please?"
    obs, r, terminated, truncated, info = env.step(action)
    assert not terminated and not truncated
    assert obs["dialogue"].endswith("agent: Could I get your full name, please?\ncustomer: Sam Lee")
    assert set(info["reward_components"]) == {"format", "length"}
    assert r == pytest.approx(1.0)
    # the logged turn searched before replying: the env runs the search and records what it found
    assert env.unwrapped.logged_action().startswith("intent: bank_fraud_report\nsearch: fraud Sam Lee\n")
    obs, r, terminated, truncated, info = env.step(env.unwrapped.logged_action())
    assert info["search_results"] == ["k-fraud"]
    assert "results: [1] fraud: Report card fraud" in obs["dialogue"]
    assert obs["dialogue"].endswith("customer: Thanks!")
    assert terminated and not truncated
    with pytest.raises(RuntimeError, match="call reset"):
        env.unwrapped.step("reply: hi")


@pytest.mark.parametrize("action", ["", "@@@", "reply:", "intent: x\nintent: y\nreply: a\nreply: b", None, "\x00\x07"])
def test_malformed_actions_are_scored_not_raised(reward, action):
    env = _make(reward)
    env.reset(seed=1, options={"conversation_id": "c1"})
    obs, r, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(obs)
    assert np.isfinite(r)
    assert info["format_problems"]


def test_truncation_comes_from_registration(reward):
    env = _make(reward, max_episode_steps=1)
    env.reset(seed=0, options={"conversation_id": "c1"})
    _, _, terminated, truncated, _ = env.step("intent: bank_fraud_report\nreply: Name please?")
    assert (terminated, truncated) == (False, True)


def test_lockstep_scores_all_envs_in_one_batch(reward):
    calls = []

    class CountingReward(CompositeReward):
        def score(self, contexts):
            calls.append(len(contexts))
            return super().score(contexts)

    counting = CountingReward({"length": LengthReward()}, {"length": 1.0})
    envs = LockstepEnvs([_make(counting) for _ in range(3)])
    envs.reset(
        seeds=[0, 1, 2], options=[{"conversation_id": "c1"}, {"conversation_id": "c2"}, {"conversation_id": "c1"}]
    )
    results = envs.step({0: "intent: a\nreply: one two", 1: "intent: b\nreply: three four", 2: "reply: x"})
    assert calls == [3]
    assert results[1][2] is True  # c2 has a single agent turn
    assert envs.active == [True, False, True]
    with pytest.raises(RuntimeError, match=r"environments \[1\] have finished"):
        envs.step({1: "reply: again"})


def test_bad_config_and_arguments_are_refused(reward):
    with pytest.raises(ValueError, match="simulator='mimic'"):
        EnvConfig(simulator="mimic")
    with pytest.raises(ValueError, match="leave_threshold=1.5"):
        EnvConfig(leave_threshold=1.5)
    with pytest.raises(ValueError, match="needs the shared sentence encoder"):
        ConversationEnv(_conversations(), reward, KeywordSearcher(KB), EnvConfig(simulator="reactive"))
    with pytest.raises(ValueError, match="no conversation with id 'nope'"):
        _make(reward).reset(options={"conversation_id": "nope"})


def test_slots_cut_the_log_at_agent_turns():
    slots = conversation_slots(_conversations()[0])
    assert [(len(s.customer_turns), s.search, s.reply) for s in slots] == [
        (1, None, "Could I get your full name, please?"),
        (1, "fraud Sam Lee", "Your report has been submitted."),
    ]
