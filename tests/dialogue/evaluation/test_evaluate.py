"""Held-out evaluation of a run: every agent plays the same conversations; KL to the reference; transcripts."""

import json

import pytest

from csrl.dialogue.evaluation.evaluate import kl_to_reference, simulate, write_transcripts
from csrl.dialogue.pipeline.runs import open_run


@pytest.fixture(scope="module")
def run(debug_run):
    return open_run(debug_run[0])


def test_every_agent_meets_the_same_customers(run):
    human = simulate(run, "human", 3, seed=5)
    sft = simulate(run, "sft", 3, seed=5)
    assert [e["policy"] for e in human] == ["human"] * 3 and [e["policy"] for e in sft] == ["sft"] * 3
    assert [e["conversation_id"] for e in human] == [e["conversation_id"] for e in sft]
    test_ids = {c.id for c in run.corpus.split("test")}
    assert {e["conversation_id"] for e in human} <= test_ids
    first_customer = [e["turns"][0]["customer"] for e in human]
    assert first_customer == [e["turns"][0]["customer"] for e in sft]
    for episode in human + sft:
        assert 1 <= len(episode["turns"]) <= run.config.ppo.turns_per_episode
        rewards = [t["reward"] for t in episode["turns"]]
        assert episode["mean_reward"] == pytest.approx(sum(rewards) / len(rewards))


def test_an_unknown_split_is_an_error(run):
    with pytest.raises(ValueError, match="unknown split 'nowhere': expected one of train, validation, test"):
        simulate(run, "human", 2, split="nowhere")


def test_kl_of_a_policy_to_itself_is_zero_and_needs_prompts(run):
    sft = run.policy("sft")
    episodes = simulate(run, "sft", 2, seed=1)
    kl = kl_to_reference(sft, sft, episodes)
    assert kl["kl_per_token"] == 0.0 and kl["tokens"] > 0 and kl["turns"] == sum(len(e["turns"]) for e in episodes)
    for episode in episodes:
        for turn in episode["turns"]:
            del turn["prompt"]
    with pytest.raises(ValueError, match="needs each turn's prompt"):
        kl_to_reference(sft, sft, episodes)


def test_transcripts_are_one_json_object_a_line(run, tmp_path):
    episodes = simulate(run, "human", 2)
    path = write_transcripts(episodes, tmp_path / "deep" / "t.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == episodes
