"""Held-out evaluation of a run: simulated episodes per agent, and the one JSON object of ``csrl eval``.

Every agent plays the same held-out conversations (the same environment seeds), so the policies
and the human reference (the logged agent turns, replayed) are compared turn for turn.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.evaluation.behaviour import behaviour
from csrl.dialogue.evaluation.playback import play_episodes, play_human_episodes
from csrl.dialogue.evaluation.report import paired_difference, summarize
from csrl.dialogue.models.prompts import policy_segments
from csrl.dialogue.pipeline.runs import Run
from csrl.dialogue.pipeline.training import make_envs
from csrl.dialogue.trainer.generation import GeneratedTurn, default_policy_config, turn_budget
from csrl.dialogue.trainer.rollout import score_tokens

EVAL_FILE = "eval.json"
TRANSCRIPTS_FILE = "eval_transcripts.jsonl"  # every episode csrl eval played: read what the policies wrote


DECODINGS = ("sampled", "greedy")  # sampled: what PPO explores (the policy's temperature); greedy: a deployed bot


def simulate(
    run: Run,
    agent: str,
    episodes: int,
    *,
    simulator: str = "replay",
    split: str = "test",
    seed: int = 0,
    num_envs: int = 16,
    max_turns: int | None = None,
    decoding: str = "sampled",
    log=None,
) -> list[dict]:
    """Play ``episodes`` held-out conversations with ``agent`` (``ppo``, ``sft`` or ``human``); one dict per episode.

    ``decoding`` is ``"sampled"`` (at the run's temperature) or ``"greedy"``; ``log`` (if given) hears the episodes
    played so far after each batch of ``num_envs``.
    """
    if decoding not in DECODINGS:
        raise ValueError(f"decoding={decoding!r}: expected one of {', '.join(DECODINGS)}")
    conversations = run.corpus.split(split)
    if not conversations:
        raise ValueError(f"the run's data has no {split!r} conversations to simulate")
    env_config = dataclasses.replace(run.config.env, simulator=simulator)
    turns = max_turns or run.config.ppo.turns_per_episode
    envs = make_envs(conversations, run.stack, env_config, min(num_envs, episodes), turns)
    name = agent if agent == "human" else f"{agent} ({decoding})"
    progress = (lambda done: log(f"eval: {name}: {done}/{episodes} episodes")) if log else None
    if agent == "human":
        played = play_human_episodes(envs, episodes, seed=seed, progress=progress)
    else:
        played = play_episodes(run.policy(agent), envs, episodes, seed=seed, policy_config=run.config.policy,
                               greedy=decoding == "greedy", progress=progress)  # fmt: skip
    for episode in played:
        episode["policy"] = agent
        if agent != "human":
            episode["decoding"] = decoding
    return played


def evaluate_run(
    run: Run, *, episodes: int | None = None, seed: int = 0, decodings: tuple[str, ...] = DECODINGS, log=print
) -> dict:
    """``csrl eval``: the reward models' held-out metrics and every policy's held-out reward, in one dict.

    Every agent plays the same conversations. Per policy and decoding: ``policy.AGENT.reward`` (sampled) or
    ``policy.AGENT.greedy.reward``, with ``...behaviour`` beside it (:mod:`csrl.dialogue.evaluation.behaviour`: reply
    length, diversity, search and intent rates, which the reward never saw); for PPO also ``gap_closed`` (the share
    of the SFT -> human gap it closed) and ``minus_sft`` (the paired difference, with its CI). Every episode
    played is written to ``eval_transcripts.jsonl`` beside ``eval.json``, with its ``policy`` and ``decoding``.
    """
    started = time.perf_counter()
    result = json.loads((run.path / "rewards" / "metrics.json").read_text())
    episodes = episodes or run.config.eval_episodes
    played = {"human": simulate(run, "human", episodes, seed=seed, log=log)}
    _report(result, "policy.human", played["human"], log)
    for agent in ("sft", "ppo"):
        for decoding in decodings:
            prefix = f"policy.{agent}" + ("" if decoding == "sampled" else f".{decoding}")
            try:
                played[prefix] = simulate(run, agent, episodes, seed=seed, decoding=decoding, log=log)
            except FileNotFoundError as err:  # a run whose PPO has not started yet still reports the rest
                log(f"eval: {err}")
                break
            _report(result, prefix, played[prefix], log)
    for decoding in decodings:
        suffix = "" if decoding == "sampled" else f".{decoding}"
        sft, ppo = f"policy.sft{suffix}", f"policy.ppo{suffix}"
        if sft in played and ppo in played:
            human_reward, sft_reward, ppo_reward = (result[f"{k}.reward"]["reward"] for k in ("policy.human", sft, ppo))
            gap = human_reward - sft_reward
            result[f"{ppo}.gap_closed"] = round((ppo_reward - sft_reward) / gap, 4) if gap else None
            result[f"{ppo}.minus_sft"] = paired_difference(played[ppo], played[sft])
    if "policy.ppo" in played:
        result["policy.ppo.kl"] = kl_to_reference(
            run.policy("ppo"), run.policy("sft"), played["policy.ppo"], policy_config=run.config.policy
        )
    result["eval_wall_s"] = round(time.perf_counter() - started, 1)
    (run.path / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    write_transcripts([e for episodes in played.values() for e in episodes], run.path / TRANSCRIPTS_FILE)
    return result


def _report(result: dict, prefix: str, episodes: list[dict], log) -> None:
    result[f"{prefix}.reward"] = summarize(episodes)
    result[f"{prefix}.behaviour"] = behaviour(episodes)
    log(f"eval: {prefix}.reward {result[f'{prefix}.reward']}  behaviour {result[f'{prefix}.behaviour']}")


@torch.no_grad()
def kl_to_reference(
    policy,
    reference,
    episodes: list[dict],
    *,
    temperature: float = 1.0,
    forward_batch_size: int = 16,
    policy_config: PolicyConfig | None = None,
) -> dict:
    """How far ``policy`` moved from ``reference``: log pi - log pi_ref on the policy tokens of played turns.

    Each turn of ``episodes`` (transcripts from :func:`~csrl.dialogue.evaluation.playback.play_episodes`, which
    keep the ``prompt``) is re-tokenized as in a rollout (prompt, then the action's pieces; the results block is
    not the policy's). When the episodes were sampled from ``policy`` at ``temperature``, the mean is a
    Monte-Carlo estimate of KL(pi || pi_ref) per token; re-tokenizing the text may pick other (canonical)
    tokens than the sampled ones, so read it as an estimate.

    ``policy_config`` (default: :func:`~csrl.dialogue.trainer.generation.default_policy_config`) sets the prompt
    budget, as in the rollouts.

    Returns:
        ``{"kl_per_token", "kl_per_turn", "turns", "tokens"}``.
    """
    tokenizer = policy.tokenizer
    prompt_budget, _ = turn_budget(policy.context_length, policy_config or default_policy_config(policy))
    turns = []
    for episode in episodes:
        for turn in episode["turns"]:
            if "prompt" not in turn:
                raise ValueError("kl_to_reference needs each turn's prompt: use transcripts from play_episodes")
            query = tokenizer(turn["prompt"], add_special_tokens=False, verbose=False)["input_ids"][-prompt_budget:]
            response, mask = [], []
            for text, owner in policy_segments(turn["action"]):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                response += ids
                mask += [int(owner == "policy")] * len(ids)
            if any(mask):
                turns.append(GeneratedTurn(query, response, mask, turn["action"], turn["action"]))
    if not turns:
        raise ValueError("no turn with policy tokens to measure the KL on: play some episodes first")
    logprobs, _ = score_tokens(policy, turns, temperature, forward_batch_size)
    ref_logprobs, _ = score_tokens(reference, turns, temperature, forward_batch_size)
    per_turn = [
        sum(a - b for a, b in zip(lp, ref, strict=True)) for lp, ref in zip(logprobs, ref_logprobs, strict=True)
    ]
    tokens = sum(sum(t.action_mask) for t in turns)
    return {
        "kl_per_token": float(sum(per_turn) / tokens),
        "kl_per_turn": float(np.mean(per_turn)),
        "turns": len(turns),
        "tokens": int(tokens),
    }


def write_transcripts(episodes: list[dict], path: str | Path) -> Path:
    """One JSON object per episode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for episode in episodes:
            out.write(json.dumps(episode, ensure_ascii=False) + "\n")
    return path
