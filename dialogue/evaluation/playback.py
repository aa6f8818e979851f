"""Evaluation playback: transcripts of the policy's episodes, or of the logged human agent's, on the same conversations.

Both play through the one episode loop (:func:`~csrl.dialogue.trainer.episodes.play_lockstep`), ``len(envs)``
episodes at a time; round ``r`` resets environment ``i`` with seed ``seed + r * B + i``, so with the same
environments, episodes and seed every agent meets the same customers, turn for turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.prompts import build_prompt
from csrl.dialogue.trainer.episodes import TurnOutcome, play_lockstep
from csrl.dialogue.trainer.generation import default_policy_config, generate_turns


def _waiting_customer_messages(history: Sequence) -> list[str]:
    """The customer's messages since the last agent (or tool) turn: what the agent answers now."""
    messages = []
    for turn in reversed(history):
        if turn.role != "customer":
            break
        messages.append(turn.text)
    return messages[::-1]


def _play(envs, episodes: int, seed: int, write_turns: Callable[[list[int]], list[str]], max_turns: int | None,
          progress: Callable[[int], None] | None = None):  # fmt: skip
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: play at least 1 episode")
    transcripts = []
    for round_start in range(0, episodes, len(envs)):
        seeds = [seed + round_start + i for i in range(len(envs))]
        transcripts += _play_round(envs, seeds, min(len(envs), episodes - round_start), write_turns, max_turns)
        if progress is not None:
            progress(len(transcripts))
    return transcripts


def _play_round(envs, seeds: list[int], count: int, write_turns, max_turns: int | None) -> list[dict]:
    """Reset every environment with ``seeds``, play the first ``count`` to the end; one transcript each."""
    _, infos = envs.reset(seeds=seeds)
    records = [
        dict(conversation_id=infos[i]["conversation_id"], intent=infos[i]["intent"], turns=[],
             terminated=False, truncated=False, customer_left=False)
        for i in range(count)
    ]  # fmt: skip
    before: dict[int, tuple] = {}  # env index -> (customer messages, prompt, action) of this round's turn

    def write(active: list[int]) -> list[str]:
        actions = write_turns(active)
        for i, action in zip(active, actions, strict=True):
            history, max_chars = envs.bare[i].history, envs.bare[i].config.max_observation_chars
            before[i] = (_waiting_customer_messages(history), build_prompt(history, max_chars), action)
        return actions

    def observe(outcomes: dict[int, TurnOutcome]) -> None:
        for i, outcome in outcomes.items():
            customer, prompt, action = before[i]
            info = outcome.info
            parsed = info["parsed_turn"]
            records[i]["turns"].append(
                dict(turn=outcome.turn_index, customer=customer, prompt=prompt, action=action,
                     intent=parsed["intent"], search=parsed["search"], results=list(info["search_results"]),
                     reply=parsed["reply"], reward=outcome.reward, components=dict(info["reward_components"]),
                     weighted=dict(info["reward_weighted"]), sentiment=float(info["sentiment"]))
            )  # fmt: skip
            records[i].update(terminated=outcome.terminated, truncated=outcome.truncated,
                              customer_left=bool(info.get("customer_left", False)))  # fmt: skip

    play_lockstep(envs, write, observe, count=count, max_turns=max_turns)
    for record in records:
        rewards = [t["reward"] for t in record["turns"]]
        record["return"] = float(sum(rewards))
        record["mean_reward"] = float(sum(rewards) / len(rewards)) if rewards else 0.0
    return records


def play_episodes(
    policy,
    envs,
    episodes: int,
    seed: int = 0,
    *,
    greedy: bool = False,
    temperature: float | None = None,
    policy_config: PolicyConfig | None = None,
    max_turns: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Transcripts of ``episodes`` episodes of the policy, played ``len(envs)`` at a time.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic`.
        envs: :class:`~csrl.env.lockstep.LockstepEnvs`; round ``r`` resets env ``i`` with seed ``seed + r * B + i``.
        episodes: how many episodes.
        seed: seeds the environments and the sampling.
        greedy: pick the most likely token (same as ``temperature=0``).
        temperature: sampling temperature (default: ``policy_config.temperature``).
        policy_config: ``max_new_tokens``, ``top_k``, ``results_char_budget`` (default: ``PolicyConfig()``'s,
            with ``max_new_tokens`` lowered to fit the policy's context).
        max_turns: truncate after this many turns (default: the environments' limit).
        progress: called with the number of episodes played after each batch of ``len(envs)``.

    Returns:
        One dict per episode: ``conversation_id``, ``intent``, ``turns`` (each ``turn``, ``customer`` -- the
        customer messages before it --, ``prompt`` -- the text the agent continued (before token truncation) --,
        ``action`` (the turn's text, results block included), ``intent``, ``search``, ``results`` (document ids),
        ``reply``, ``reward``, ``components``, ``weighted``, ``sentiment``), ``mean_reward``, ``return``,
        ``terminated``, ``truncated``, ``customer_left``.
    """
    policy_config = policy_config or default_policy_config(policy)
    temperature = 0.0 if greedy else (policy_config.temperature if temperature is None else temperature)
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: use 0 (greedy) or a positive temperature")
    policy.eval()
    generator = torch.Generator(device=policy.device).manual_seed(seed)

    def write(active: list[int]) -> list[str]:
        return [t.action for t in generate_turns(policy, envs, active, policy_config, temperature, generator)]

    return _play(envs, episodes, seed, write, max_turns, progress)


def play_human_episodes(
    envs, episodes: int, seed: int = 0, *, max_turns: int | None = None, progress: Callable[[int], None] | None = None
) -> list[dict]:
    """Transcripts of the logged human agent (``env.logged_action()``) on the same episodes as :func:`play_episodes`.

    With the same ``envs``, ``episodes`` and ``seed`` the conversations match the policy's one for one
    (with the replay customer), so the two can be compared turn by turn.
    """

    def write(active: list[int]) -> list[str]:
        return [envs.bare[i].logged_action() or "" for i in active]

    return _play(envs, episodes, seed, write, max_turns, progress)
