"""Held-out evaluation of a run: simulated episodes per agent, and the one JSON object of ``csrl eval``.

Every agent plays the same held-out conversations (the same environment seeds), so the policies
and the human reference (the logged agent turns, replayed) are compared turn for turn.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from csrl.dialogue.evaluation.report import paired_difference, summarize
from csrl.dialogue.pipeline.runs import Run
from csrl.dialogue.pipeline.training import make_envs

EVAL_FILE = "eval.json"


def simulate(
    run: Run,
    agent: str,
    episodes: int,
    *,
    simulator: str = "replay",
    split: str = "test",
    seed: int = 0,
    batch_size: int = 16,
    max_turns: int | None = None,
) -> list[dict]:
    """Play ``episodes`` held-out conversations with ``agent`` (``ppo``, ``sft`` or ``human``); one dict per episode."""
    from csrl.dialogue.trainer.rollout import play_episodes, play_human_episodes

    conversations = run.corpus.split(split)
    if not conversations:
        raise ValueError(f"the run's data has no {split!r} conversations to simulate")
    env_config = dataclasses.replace(run.config.env, simulator=simulator)
    turns = max_turns or run.config.ppo.turns_per_episode
    envs = make_envs(conversations, run.stack, env_config, min(batch_size, episodes), turns)
    if agent == "human":
        played = play_human_episodes(envs, episodes, seed=seed)
    else:
        played = play_episodes(run.policy(agent), envs, episodes, seed=seed, policy_config=run.config.policy)
    for episode in played:
        episode["policy"] = agent
    return played


def evaluate_run(run: Run, *, episodes: int | None = None, seed: int = 0, log=print) -> dict:
    """``csrl eval``: the reward models' held-out metrics and every policy's held-out reward, in one dict."""
    from csrl.dialogue.trainer.ppo_trainer import kl_to_reference

    started = time.perf_counter()
    result = json.loads((run.path / "rewards" / "metrics.json").read_text())
    episodes = episodes or run.config.eval_episodes
    played = {}
    for agent in ("human", "sft", "ppo"):
        try:
            played[agent] = simulate(run, agent, episodes, seed=seed)
        except FileNotFoundError as err:  # a run whose PPO has not started yet still reports the rest
            log(f"eval: {err}")
            continue
        result[f"policy.{agent}.reward"] = summarize(played[agent])
        log(f"eval: {agent} {result[f'policy.{agent}.reward']}")
    if "ppo" in played:
        result["policy.ppo.kl"] = kl_to_reference(run.policy("ppo"), run.policy("sft"), played["ppo"])
    if {"human", "sft", "ppo"} <= played.keys():
        human, sft, ppo = (result[f"policy.{a}.reward"]["reward"] for a in ("human", "sft", "ppo"))
        result["policy.ppo.gap_closed"] = round((ppo - sft) / (human - sft), 4) if human != sft else None
        result["policy.ppo.minus_sft"] = paired_difference(played["ppo"], played["sft"])
    result["eval_wall_s"] = round(time.perf_counter() - started, 1)
    (run.path / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def write_transcripts(episodes: list[dict], path: str | Path) -> Path:
    """One JSON object per episode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for episode in episodes:
            out.write(json.dumps(episode, ensure_ascii=False) + "\n")
    return path
