r"""PPO's rollouts: one episode in every environment, each turn recorded with what the update needs.

The policy writes each turn (:func:`~csrl.dialogue.trainer.generation.generate_turns`), the episode loop
(:func:`~csrl.dialogue.trainer.episodes.play_lockstep`) steps the environments, and each turn becomes a
:class:`~csrl.dialogue.trainer.buffer.TurnRecord`: token ids, action mask, the old log-probs and values, the
frozen reference's log-probs, the reward breakdown and where each stage's reward lands
(:func:`~csrl.dialogue.trainer.credit.place_rewards`), plus ``V`` of the next state where an episode is truncated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.policy import left_pad
from csrl.dialogue.models.prompts import build_prompt
from csrl.dialogue.trainer.buffer import TrajectoryBuffer, TurnRecord
from csrl.dialogue.trainer.credit import place_rewards, stage_positions
from csrl.dialogue.trainer.episodes import TurnOutcome, play_lockstep
from csrl.dialogue.trainer.generation import GeneratedTurn, generate_turns, turn_budget


def episode_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """A 31-bit seed for ``(seed, iteration)`` and the process ``rank``, distinct across all three.

    Rank 0 draws what a one-process run draws, so adding processes adds episodes and changes none.

    >>> episode_seed(0, 1) == episode_seed(0, 1, rank=0) != episode_seed(1, 0) != episode_seed(0, 1, rank=1)
    True
    """
    entropy = [seed, iteration] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


@torch.no_grad()
def score_tokens(model, turns: Sequence[GeneratedTurn], temperature: float, forward_batch_size: int = 16):
    """Per response token ``(logprobs, values)`` lists of ``model`` on each turn's prompt + response.

    Computed on exactly the stored sequences (not taken from generation), so the PPO ratio starts at 1.
    """
    pad_id = model.tokenizer.pad_token_id
    logprobs_out, values_out = [], []
    for start in range(0, len(turns), forward_batch_size):
        chunk = turns[start : start + forward_batch_size]
        input_ids, attention_mask = left_pad([t.query_ids + t.response_ids for t in chunk], pad_id, model.device)
        action_mask = torch.zeros_like(attention_mask)  # (B, T)
        for b, turn in enumerate(chunk):
            action_mask[b, input_ids.shape[1] - len(turn.response_ids) :] = torch.tensor(turn.action_mask)
        logprobs, _, values = model.evaluate(input_ids, attention_mask, action_mask, temperature=temperature or 1.0)
        for b, turn in enumerate(chunk):
            n = len(turn.response_ids)
            logprobs_out.append(logprobs[b, -n:].tolist() if n else [])
            values_out.append(values[b, -n:].tolist() if n else [])
    return logprobs_out, values_out


@torch.no_grad()
def prompt_values(policy, envs, indices: Sequence[int], policy_config: PolicyConfig) -> list[float]:
    """V of each environment's current state (its next prompt): the bootstrap of a truncated episode."""
    if not indices:
        return []
    prompt_budget, _ = turn_budget(policy.context_length, policy_config)
    tokenizer = policy.tokenizer
    rows = [
        tokenizer(  # cut to the budget right after, so the over-length warning does not apply (verbose=False)
            build_prompt(envs.bare[i].history, envs.bare[i].config.max_observation_chars),
            add_special_tokens=False,
            verbose=False,
        )["input_ids"][-prompt_budget:]
        for i in indices
    ]
    _, values = policy(*left_pad(rows, tokenizer.pad_token_id, policy.device))  # (B, T)
    return values[:, -1].float().tolist()


@dataclass
class RolloutStats:
    """Counts and timings of one :func:`collect_rollouts` call."""

    episodes: int = 0
    turns: int = 0
    generated_tokens: int = 0
    generate_s: float = 0.0
    score_s: float = 0.0
    env_s: float = 0.0
    episodic_returns: list[float] = field(default_factory=list)

    @property
    def generate_tokens_per_s(self) -> float:
        """New policy tokens per second of generation."""
        return self.generated_tokens / self.generate_s if self.generate_s > 0 else math.nan


def collect_rollouts(
    policy,
    reference,
    envs,
    policy_config: PolicyConfig,
    *,
    seed: int,
    max_turns: int | None = None,
    credit: str = "process",
    episode_offset: int = 0,
    forward_batch_size: int = 16,
) -> tuple[TrajectoryBuffer, RolloutStats]:
    """Play one episode in every environment of ``envs`` with the policy; record every turn for PPO.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic` being trained (sampled at
            ``policy_config.temperature``).
        reference: its frozen copy at the start of training (for the per-token KL penalty).
        envs: :class:`~csrl.env.lockstep.LockstepEnvs`; all are reset with seeds drawn from ``seed``.
        policy_config: the policy config's ``max_new_tokens``, ``temperature``, ``top_k``, ``results_char_budget``.
        seed: seeds the environment resets and the sampling (same seed, same rollout).
        max_turns: truncate episodes after this many turns (default: the environments' limit).
        credit: ``"process"`` or ``"turn"``: where the stage rewards land (``TurnRecord.token_rewards``).
        episode_offset: the first episode id.
        forward_batch_size: sequences per forward pass when scoring log-probs and values.

    Returns:
        The buffer (one :class:`~csrl.dialogue.trainer.buffer.TurnRecord` per turn, episodes in order) and
        :class:`RolloutStats`.
    """
    if policy_config.temperature <= 0:
        raise ValueError(
            f"temperature={policy_config.temperature}: PPO rollouts must sample (use a positive temperature)"
        )
    policy.eval()
    reference.eval()
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    env_seeds = np.random.SeedSequence(seed).generate_state(len(envs)).tolist()
    envs.reset(seeds=[int(s >> 1) for s in env_seeds])
    buffer, stats = TrajectoryBuffer(), RolloutStats(episodes=len(envs))
    returns = [0.0] * len(envs)
    written: dict = {}  # this round's turns, with their scores, from write() to observe()

    def write(active: list[int]) -> list[str]:
        start = time.perf_counter()
        turns = generate_turns(policy, envs, active, policy_config, policy_config.temperature, generator)
        stats.generate_s += time.perf_counter() - start
        stats.generated_tokens += sum(sum(t.action_mask) for t in turns)
        start = time.perf_counter()
        logprobs, values = score_tokens(policy, turns, policy_config.temperature, forward_batch_size)
        ref_logprobs, _ = score_tokens(reference, turns, policy_config.temperature, forward_batch_size)
        stats.score_s += time.perf_counter() - start
        written.update(active=active, turns=turns, logprobs=logprobs, values=values, ref_logprobs=ref_logprobs,
                       stepped_at=time.perf_counter())  # fmt: skip
        return [t.action for t in turns]

    def observe(outcomes: dict[int, TurnOutcome]) -> None:
        stats.env_s += time.perf_counter() - written["stepped_at"]
        truncated = [i for i, outcome in outcomes.items() if outcome.truncated]
        bootstrap = dict(zip(truncated, prompt_values(policy, envs, truncated, policy_config), strict=True))
        for k, (i, turn) in enumerate(zip(written["active"], written["turns"], strict=True)):
            outcome = outcomes[i]
            positions = stage_positions(policy.tokenizer, turn)
            weighted = dict(outcome.info["reward_weighted"])
            buffer.add(
                TurnRecord(
                    episode_id=episode_offset + i,
                    turn_index=outcome.turn_index,
                    state=policy.tokenizer.decode(turn.query_ids, skip_special_tokens=False),
                    action=turn.text,
                    reward=outcome.reward,
                    stage_rewards=weighted,
                    components=dict(outcome.info["reward_components"]),
                    done=outcome.terminated,
                    truncated=outcome.truncated,
                    query_ids=turn.query_ids,
                    response_ids=turn.response_ids,
                    action_mask=turn.action_mask,
                    logprobs=written["logprobs"][k],
                    values=written["values"][k],
                    ref_logprobs=written["ref_logprobs"][k],
                    stage_token_index=positions,
                    token_rewards=place_rewards(len(turn.response_ids), positions, weighted, credit),
                    bootstrap_value=bootstrap.get(i, 0.0),
                )
            )
            returns[i] += outcome.reward
            stats.turns += 1

    play_lockstep(envs, write, observe, max_turns=max_turns)
    stats.episodic_returns = returns
    return buffer, stats
