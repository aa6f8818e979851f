"""PPO: GAE chained over an episode's policy tokens, a debug run that learns, exact resume, the run directory."""

import copy
import dataclasses
import json
import math

import pytest
import torch
from support import GENERATION, build_taught_policy, make_envs

from csrl.dialogue.config import PPOConfig
from csrl.dialogue.evaluation.evaluate import kl_to_reference
from csrl.dialogue.evaluation.playback import play_episodes
from csrl.dialogue.models.policy import ActorCritic
from csrl.dialogue.pipeline.config import TrainConfig
from csrl.dialogue.trainer.buffer import TrajectoryBuffer, TurnRecord
from csrl.dialogue.trainer.checkpoints import latest_checkpoint, latest_policy_folder
from csrl.dialogue.trainer.ppo import compute_advantages, explained_variance
from csrl.dialogue.trainer.ppo_trainer import read_metrics, train_ppo
from csrl.rewards.composite import CompositeReward
from csrl.rewards.rules import FormatReward, LengthReward, RepetitionReward

DEBUG_PPO = TrainConfig.from_preset("debug").ppo
CONFIG = dataclasses.replace(DEBUG_PPO, learning_rate=1e-3, kl_coef=0.1, update_epochs=2, seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def start_policy():
    return build_taught_policy()


def turn(episode, index, rewards, values, mask, *, kl=0.0, done=False, truncated=False, bootstrap=0.0):
    n = len(rewards)
    return TurnRecord(
        episode_id=episode, turn_index=index, state="", action="", reward=sum(rewards), done=done,
        truncated=truncated, query_ids=[7, 8], response_ids=list(range(n)), action_mask=mask,
        logprobs=[-1.0 * m for m in mask], ref_logprobs=[(-1.0 - kl) * m for m in mask],
        values=[v * m for v, m in zip(values, mask, strict=True)], token_rewards=rewards, bootstrap_value=bootstrap,
    )  # fmt: skip


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.9, 0.8)])
def test_gae_chains_an_episodes_turns_and_bootstraps_truncation(gamma, lam):
    # episode 0: two turns; the middle token of turn 0 is an inserted results token (not a step); truncated
    # episode 1: one turn, terminated. KL: log pi - log pi_ref = 0.5 on every policy token of episode 0.
    buffer = TrajectoryBuffer(
        [
            turn(0, 0, [0.0, 0.0, 0.3], [0.1, 0.0, 0.2], [1, 0, 1], kl=0.5),
            turn(1, 0, [0.0, 1.0], [0.4, 0.6], [1, 1], done=True),
            turn(0, 1, [0.0, 0.5], [0.3, 0.25], [1, 1], kl=0.5, truncated=True, bootstrap=2.0),
        ]
    )
    config = PPOConfig(gamma=gamma, lam=lam, kl_coef=0.2, whiten_advantages=False)
    turns = compute_advantages(buffer, config)

    def gae(rewards, values, last_value):
        advantages, next_value, running = [], last_value, 0.0
        for r, v in zip(reversed(rewards), reversed(values), strict=True):
            delta = r + gamma * next_value - v
            running = delta + gamma * lam * running
            advantages.append(running)
            next_value = v
        return advantages[::-1]

    penalty = 0.2 * 0.5
    steps = gae([0 - penalty, 0.3 - penalty, 0 - penalty, 0.5 - penalty], [0.1, 0.2, 0.3, 0.25], last_value=2.0)
    assert turns[0].advantages.tolist() == pytest.approx([steps[0], 0.0, steps[1]])
    assert turns[2].advantages.tolist() == pytest.approx(steps[2:])
    assert turns[2].returns.tolist() == pytest.approx([steps[2] + 0.3, steps[3] + 0.25])
    assert turns[1].advantages.tolist() == pytest.approx(gae([0.0, 1.0], [0.4, 0.6], last_value=0.0))
    assert turns[0].action_mask.tolist() == [0, 0, 1, 0, 1], "prompt and results tokens are not actions"
    whitened = compute_advantages(buffer, PPOConfig(gamma=gamma, lam=lam, kl_coef=0.2))
    policy_tokens = torch.cat([t.advantages[t.action_mask[2:].bool()] for t in whitened])
    assert policy_tokens.mean() == pytest.approx(0.0, abs=1e-6) and policy_tokens.std() == pytest.approx(1.0)


def test_compute_advantages_needs_reference_logprobs():
    record = turn(0, 0, [1.0], [0.0], [1], done=True)
    record.ref_logprobs = []
    with pytest.raises(ValueError, match="no ref_logprobs"):
        compute_advantages(TrajectoryBuffer([record]), PPOConfig())


def test_explained_variance():
    assert explained_variance(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0])) == pytest.approx(0.0)


def _parameters(policy):
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


def test_debug_run_learns_logs_and_writes_its_run_dir(start_policy, tmp_path):
    policy = copy.deepcopy(start_policy)
    before = _parameters(policy)
    # the repetition rule pays even a garbled turn, so there is a signal whatever the sampled text: with a reward
    # of 0 everywhere (and the KL 0 at the start) PPO rightly leaves every parameter alone
    reward = CompositeReward(
        {"intent": FormatReward(), "retrieval": LengthReward(), "satisfaction": RepetitionReward()},
        {"intent": 0.3, "retrieval": 0.5, "satisfaction": 0.2},
    )
    envs = make_envs(n=2, max_turns=5, reward=reward)
    result = train_ppo(policy, envs, CONFIG, tmp_path, policy_config=GENERATION, progress=False)
    after = _parameters(policy)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert "value_head.weight" in changed and any(name.startswith("lm.") for name in changed)
    for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"):
        assert torch.isfinite(torch.tensor(result[name])), name
    assert result["iterations"] == 2 and result["resumed_from"] == 0
    metrics = read_metrics(tmp_path)
    assert [m["iteration"] for m in metrics] == [1, 2]
    for name in ("charts/episodic_reward", "charts/reward_per_turn", "charts/reward_intent", "charts/reward_retrieval",
                 "charts/reward_satisfaction", "charts/kl_to_ref", "charts/learning_rate", "losses/explained_variance",
                 "charts/rollout_tokens_per_s", "charts/update_tokens_per_s"):  # fmt: skip
        assert name in metrics[-1], name
    assert metrics[0]["charts/kl_to_ref"] == pytest.approx(0.0, abs=1e-5), "iteration 1 samples the reference itself"
    assert (tmp_path / "plots" / "ppo.png").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "ppo_config.json").read_text())["ppo"]["seed"] == 3
    assert latest_checkpoint(tmp_path) == (2, tmp_path / "checkpoints" / "iter_0002")
    assert (tmp_path / "checkpoints" / "iter_0002" / "model.safetensors").is_file()
    assert (tmp_path / "reference" / "value_head.safetensors").is_file()
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    for iteration in (1, 2):
        buffer = TrajectoryBuffer.load(tmp_path / "buffers" / f"iter_{iteration:04d}.parquet")
        assert len(buffer) == metrics[iteration - 1]["rollout/turns"]
        assert {r.episode_id for r in buffer} == {2 * (iteration - 1), 2 * (iteration - 1) + 1}
        assert all(len(r.token_rewards) == len(r.response_ids) for r in buffer)
    assert latest_policy_folder(tmp_path) == tmp_path / "checkpoints" / "iter_0002"
    played = play_episodes(policy, make_envs(n=2, max_turns=2), 2, seed=0, policy_config=GENERATION)
    kl = kl_to_reference(policy, ActorCritic.load(tmp_path / "reference"), played)
    assert kl["turns"] == sum(len(e["turns"]) for e in played) and math.isfinite(kl["kl_per_token"])
    assert kl_to_reference(policy, policy, played)["kl_per_token"] == 0.0
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_ppo(
            copy.deepcopy(start_policy), make_envs(n=2), CONFIG, tmp_path, policy_config=GENERATION, progress=False
        )


def test_resume_after_iteration_one_equals_an_uninterrupted_run(start_policy, tmp_path):
    straight = copy.deepcopy(start_policy)
    train_ppo(straight, make_envs(n=2, max_turns=5), CONFIG, tmp_path / "a", policy_config=GENERATION, progress=False)

    # "killed" after iteration 1: a first process runs one iteration; a second starts from the SFT policy again
    first = copy.deepcopy(start_policy)
    one = copy.deepcopy(CONFIG)
    one.total_iterations = 1
    train_ppo(first, make_envs(n=2, max_turns=5), one, tmp_path / "b", policy_config=GENERATION, progress=False)
    # debris of a kill during iteration 2's save: a half-written checkpoint and a stray metrics line
    (tmp_path / "b" / "checkpoints" / ".iter_0002.tmp").mkdir()
    (tmp_path / "b" / "checkpoints" / ".iter_0002.tmp" / "model.safetensors").write_bytes(b"\0" * 10)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"iteration": 2, "charts/episodic_reward": -1.0}) + "\n")
    assert latest_checkpoint(tmp_path / "b")[0] == 1
    resumed = copy.deepcopy(start_policy)
    result = train_ppo(
        resumed, make_envs(n=2, max_turns=5), CONFIG, tmp_path / "b", policy_config=GENERATION, resume=True,
        progress=False,
    )  # fmt: skip
    assert result["resumed_from"] == 1
    # bitwise: every random draw is seeded from (seed, iteration) and the state round-trips exactly
    expected, got = _parameters(straight), _parameters(resumed)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert [m["iteration"] for m in read_metrics(tmp_path / "b")] == [1, 2]
    a, b = read_metrics(tmp_path / "a")[-1], read_metrics(tmp_path / "b")[-1]
    assert (
        a["losses/policy_loss"] == b["losses/policy_loss"]
        and a["charts/episodic_reward"] == b["charts/episodic_reward"]
    )
