r"""Batched multi-turn rollouts: B conversations stepped together, one batched generation per step.

Each step, every active environment's dialogue becomes a prompt (:func:`~csrl.dialogue.models.prompts.build_prompt`)
and the policy writes the agent turn for all of them in one batched :meth:`~csrl.dialogue.models.policy.ActorCritic.generate`
that pauses after a ``search:`` line. The rows that paused get their environment's search results inserted as
:func:`~csrl.dialogue.models.prompts.results_text` tokens -- the environment's, not the policy's: action mask 0 -- and
write their ``reply:`` in a second batched generation. :meth:`csrl.env.lockstep.LockstepEnvs.step` then scores every
turn in one reward call.

Two users:

- :func:`collect_rollouts` (PPO): per turn, the token ids, action mask, old log-probs and values, the frozen
  reference's log-probs, the reward breakdown and where each stage's reward lands, into a
  :class:`~csrl.dialogue.trainer.buffer.TrajectoryBuffer`.
- :func:`play_episodes` and :func:`play_human_episodes` (``csrl simulate`` / ``csrl eval``): transcripts
  of the policy's episodes, or of the logged human agent's.

Token budget of one turn: the prompt keeps its newest ``n_positions - 2 * max_new_tokens - results cap``
tokens (``results cap = n_positions // 4``), so prompt, both generations and the results block always fit the
context, and the PPO update sees exactly the tokens the policy was conditioned on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.prompts import SEARCH_PAUSE, TURN_END_STOPS, build_prompt, parse_agent_turn, results_text
from csrl.dialogue.trainer.buffer import TrajectoryBuffer, TurnRecord
from csrl.dialogue.trainer.credit import place_rewards, stage_char_ends, token_at_char

# -- helpers ---------------------------------------------------------------------------------------


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Token id lists as a left-padded batch: returns ``(input_ids, attention_mask)``, each ``(B, T)``.

    >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        if row:
            input_ids[b, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            attention_mask[b, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def cut_turn_end(text: str) -> str:
    r"""The turn's text up to where the policy began writing the next role's line (a turn-end stop).

    >>> cut_turn_end("intent: x\nreply: ok\ncustomer: thanks")
    'intent: x\nreply: ok'
    """
    cuts = [text.find(stop) for stop in TURN_END_STOPS if stop in text]
    return text[: min(cuts)] if cuts else text


def token_char_ends(tokenizer, token_ids: Sequence[int], skip: int | None = None) -> list[int]:
    """Cumulative character ends of each token of ``token_ids`` in their decoded text (``skip``: an id to drop).

    Decoded prefix by prefix, so multi-byte characters split across byte-level tokens count once; forced
    non-decreasing, as :func:`~csrl.dialogue.trainer.credit.token_at_char` bisects them.
    """
    ends, kept, last = [], [], 0
    for token in token_ids:
        if token != skip:
            kept.append(token)
        last = max(last, len(tokenizer.decode(kept, skip_special_tokens=False)))
        ends.append(last)
    return ends


def snap_to_action(index: int, action_mask: Sequence[int]) -> int:
    """The policy token at or before ``index`` (else the first after): a reward must land on an action.

    >>> snap_to_action(3, [1, 1, 0, 0, 1])
    1
    >>> snap_to_action(0, [0, 1])
    1
    """
    for i in range(min(index, len(action_mask) - 1), -1, -1):
        if action_mask[i]:
            return i
    return next(i for i, m in enumerate(action_mask) if m)


def episode_seed(seed: int, iteration: int) -> int:
    """A 31-bit seed for ``(seed, iteration)``, distinct across both (``numpy.random.SeedSequence``).

    >>> episode_seed(0, 1) == episode_seed(0, 1) != episode_seed(1, 0)
    True
    """
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0] >> 1)


def turn_budget(context_length: int | None, policy_config: PolicyConfig) -> tuple[int, int]:
    """Token budgets ``(prompt, results)`` that keep prompt + both generations + results in the context.

    >>> turn_budget(256, PolicyConfig.preset("debug"))
    (96, 64)
    """
    context = context_length or policy_config.n_positions
    results_cap = context // 4
    prompt_budget = context - 2 * policy_config.max_new_tokens - results_cap
    if prompt_budget < 16:
        raise ValueError(
            f"a context of {context} tokens leaves {prompt_budget} for the prompt after 2 × max_new_tokens="
            f"{policy_config.max_new_tokens} and {results_cap} results tokens: lower max_new_tokens"
        )
    return prompt_budget, results_cap


# -- one batched agent turn ------------------------------------------------------------------------


@dataclass
class GeneratedTurn:
    """One environment's agent turn as the policy wrote it.

    Attributes:
        query_ids: the prompt tokens the policy was conditioned on (the newest ones that fit).
        response_ids: the turn's tokens: the policy's, the inserted results block, the policy's again.
        action_mask: 1 for the policy's tokens, 0 for the results block.
        text: ``response_ids`` decoded (results included, eos left out).
        action: the text the environment receives: ``text`` up to a turn-end stop. The results block stays in
            (the environment ignores it), so the ``search:`` value it parses ends where the policy's did.
        searched: the turn paused for a search and got results inserted.
    """

    query_ids: list[int]
    response_ids: list[int]
    action_mask: list[int]
    text: str
    action: str
    searched: bool = False


@torch.no_grad()
def generate_turns(
    policy,
    envs,
    indices: Sequence[int],
    policy_config: PolicyConfig,
    temperature: float,
    generator: torch.Generator | None = None,
) -> list[GeneratedTurn]:
    """Write the agent turn of each environment in ``indices`` with two batched generations.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic`.
        envs: the :class:`~csrl.env.lockstep.LockstepEnvs`.
        indices: the environments to write for (active ones).
        policy_config: ``max_new_tokens``, ``top_k`` and ``results_char_budget`` of the policy config.
        temperature: sampling temperature (0: greedy).
        generator: seeded sampling.

    Returns:
        One :class:`GeneratedTurn` per index, in order.
    """
    tokenizer = policy.tokenizer
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_budget, results_cap = turn_budget(policy.context_length, policy_config)
    prompts = [build_prompt(envs.bare[i].history, envs.bare[i].config.max_observation_chars) for i in indices]
    query_ids = [tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"][-prompt_budget:] for p in prompts]
    sample = dict(max_new_tokens=policy_config.max_new_tokens, temperature=temperature, top_k=policy_config.top_k)

    first = policy.generate(
        *left_pad(query_ids, pad_id, policy.device), stop=[SEARCH_PAUSE, *TURN_END_STOPS], generator=generator, **sample
    )
    paused = [
        row
        for row, (text, reason) in enumerate(zip(first.texts, first.stop_reasons, strict=True))
        if reason == "stop" and SEARCH_PAUSE.search(text) and cut_turn_end(text) == text
    ]
    queries = {indices[row]: parse_agent_turn(first.texts[row]).search or "" for row in paused}
    documents = envs.search(queries)
    results_ids = {}
    for row in paused:
        ids = tokenizer(
            results_text(documents[indices[row]], policy_config.results_char_budget), add_special_tokens=False
        )["input_ids"]
        if len(ids) > results_cap:  # keep the first documents, and the newline that ends the block
            ids = ids[: results_cap - 1] + tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
        results_ids[row] = ids
    second_rows = {}
    if paused:
        second = policy.generate(
            *left_pad([query_ids[r] + first.tokens[r] + results_ids[r] for r in paused], pad_id, policy.device),
            stop=list(TURN_END_STOPS),
            generator=generator,
            **sample,
        )
        second_rows = {row: second.tokens[k] for k, row in enumerate(paused)}

    turns = []
    for row in range(len(indices)):
        response, mask = list(first.tokens[row]), [1] * len(first.tokens[row])
        if row in second_rows:
            tokens2 = second_rows[row]
            response += results_ids[row] + tokens2
            mask += [0] * len(results_ids[row]) + [1] * len(tokens2)
        text = tokenizer.decode([t for t in response if t != eos_id], skip_special_tokens=False)
        turns.append(
            GeneratedTurn(
                query_ids=list(query_ids[row]),
                response_ids=response,
                action_mask=mask,
                text=text,
                action=cut_turn_end(text),
                searched=row in second_rows,
            )
        )
    return turns


def stage_positions(tokenizer, turn: GeneratedTurn) -> dict[str, int]:
    """Index in ``turn.response_ids`` of the last token of each step (intent, search, reply), on policy tokens."""
    ends = token_char_ends(tokenizer, turn.response_ids, skip=tokenizer.eos_token_id)
    chars = stage_char_ends(cut_turn_end(turn.text))
    return {step: snap_to_action(token_at_char(ends, end), turn.action_mask) for step, end in chars.items()}


@torch.no_grad()
def score_tokens(model, turns: Sequence[GeneratedTurn], temperature: float, batch_size: int = 16):
    """Per response token ``(logprobs, values)`` lists of ``model`` on each turn's prompt + response.

    Computed on exactly the stored sequences (not taken from generation), so the PPO ratio starts at 1.
    """
    pad_id = model.tokenizer.pad_token_id
    logprobs_out, values_out = [], []
    for start in range(0, len(turns), batch_size):
        chunk = turns[start : start + batch_size]
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


# -- episodes ----------------------------------------------------------------------------------------


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


def _turn_limits(envs, max_turns: int | None) -> list[int]:
    return [min(limit, max_turns) if max_turns else limit for limit in envs.max_turns]


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
    batch_size: int = 16,
) -> tuple[TrajectoryBuffer, RolloutStats]:
    """Play one episode in every environment of ``envs`` with the policy; record every turn for PPO.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic` being trained (sampled at ``policy_config.temperature``).
        reference: its frozen copy at the start of training (for the per-token KL penalty).
        envs: :class:`~csrl.env.lockstep.LockstepEnvs`; all are reset with seeds drawn from ``seed``.
        policy_config: the policy config's ``max_new_tokens``, ``temperature``, ``top_k``, ``results_char_budget``.
        seed: seeds the environment resets and the sampling (same seed, same rollout).
        max_turns: truncate episodes after this many turns (default: the environments' limit).
        credit: ``"process"`` or ``"turn"``: where the stage rewards land (``TurnRecord.token_rewards``).
        episode_offset: the first episode id.
        batch_size: sequences per forward pass when scoring log-probs and values.

    Returns:
        The buffer (one :class:`~csrl.dialogue.trainer.buffer.TurnRecord` per turn, episodes in order) and :class:`RolloutStats`.
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
    limits = _turn_limits(envs, max_turns)
    buffer, stats = TrajectoryBuffer(), RolloutStats(episodes=len(envs))
    returns = [0.0] * len(envs)
    active = [i for i in range(len(envs)) if envs.active[i]]
    turn_index = 0
    while active:
        start = time.perf_counter()
        turns = generate_turns(policy, envs, active, policy_config, policy_config.temperature, generator)
        stats.generate_s += time.perf_counter() - start
        stats.generated_tokens += sum(sum(t.action_mask) for t in turns)
        start = time.perf_counter()
        logprobs, values = score_tokens(policy, turns, policy_config.temperature, batch_size)
        ref_logprobs, _ = score_tokens(reference, turns, policy_config.temperature, batch_size)
        stats.score_s += time.perf_counter() - start
        start = time.perf_counter()
        results = envs.step({i: t.action for i, t in zip(active, turns, strict=True)})
        stats.env_s += time.perf_counter() - start
        truncated_now = [i for i in active if not results[i][2] and (results[i][3] or turn_index + 1 >= limits[i])]
        bootstrap = dict(zip(truncated_now, prompt_values(policy, envs, truncated_now, policy_config), strict=True))
        for k, (i, turn) in enumerate(zip(active, turns, strict=True)):
            _, reward, terminated, _, info = results[i]
            positions = stage_positions(policy.tokenizer, turn)
            weighted = dict(info["reward_weighted"])
            buffer.add(
                TurnRecord(
                    episode_id=episode_offset + i,
                    turn_index=turn_index,
                    state=policy.tokenizer.decode(turn.query_ids, skip_special_tokens=False),
                    action=turn.text,
                    reward=float(reward),
                    stage_rewards=weighted,
                    components=dict(info["reward_components"]),
                    done=bool(terminated),
                    truncated=i in bootstrap,
                    query_ids=turn.query_ids,
                    response_ids=turn.response_ids,
                    action_mask=turn.action_mask,
                    logprobs=logprobs[k],
                    values=values[k],
                    ref_logprobs=ref_logprobs[k],
                    stage_token_index=positions,
                    token_rewards=place_rewards(len(turn.response_ids), positions, weighted, credit),
                    bootstrap_value=bootstrap.get(i, 0.0),
                )
            )
            returns[i] += float(reward)
            stats.turns += 1
        active = [i for i in active if not results[i][2] and i not in bootstrap]
        turn_index += 1
    stats.episodic_returns = returns
    return buffer, stats


def _waiting_customer_messages(history: Sequence) -> list[str]:
    """The customer's messages since the last agent (or tool) turn: what the agent answers now."""
    messages = []
    for turn in reversed(history):
        if turn.role != "customer":
            break
        messages.append(turn.text)
    return messages[::-1]


def _play(
    envs,
    episodes: int,
    seed: int,
    write_turns: Callable[[list[int]], list[str]],
    max_turns: int | None,
) -> list[dict]:
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: play at least 1 episode")
    transcripts = []
    for round_start in range(0, episodes, len(envs)):
        count = min(len(envs), episodes - round_start)
        seeds = [seed + round_start + i for i in range(len(envs))]
        _, infos = envs.reset(seeds=seeds)
        limits = _turn_limits(envs, max_turns)
        records = [
            dict(conversation_id=infos[i]["conversation_id"], intent=infos[i]["intent"], turns=[],
                 terminated=False, truncated=False, customer_left=False)
            for i in range(count)
        ]  # fmt: skip
        active = [i for i in range(count) if envs.active[i]]
        while active:
            actions = write_turns(active)
            customer = {i: _waiting_customer_messages(envs.bare[i].history) for i in active}
            prompts = {i: build_prompt(envs.bare[i].history, envs.bare[i].config.max_observation_chars) for i in active}
            results = envs.step(dict(zip(active, actions, strict=True)))
            for i, action in zip(active, actions, strict=True):
                _, reward, terminated, truncated, info = results[i]
                parsed = info["parsed_turn"]
                turn_number = len(records[i]["turns"])
                truncated = truncated or (not terminated and turn_number + 1 >= limits[i])
                records[i]["turns"].append(
                    dict(turn=turn_number, customer=customer[i], prompt=prompts[i], action=action,
                         intent=parsed["intent"], search=parsed["search"], results=list(info["search_results"]),
                         reply=parsed["reply"], reward=float(reward), components=dict(info["reward_components"]),
                         weighted=dict(info["reward_weighted"]), sentiment=float(info["sentiment"]))
                )  # fmt: skip
                records[i].update(terminated=bool(terminated), truncated=bool(truncated))
                records[i]["customer_left"] = bool(info.get("customer_left", False))
            active = [i for i in active if not records[i]["terminated"] and not records[i]["truncated"]]
        for record in records:
            rewards = [t["reward"] for t in record["turns"]]
            record["return"] = float(sum(rewards))
            record["mean_reward"] = float(sum(rewards) / len(rewards)) if rewards else 0.0
            transcripts.append(record)
    return transcripts


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

    return _play(envs, episodes, seed, write, max_turns)


def play_human_episodes(envs, episodes: int, seed: int = 0, *, max_turns: int | None = None) -> list[dict]:
    """Transcripts of the logged human agent (``env.logged_action()``) on the same episodes as :func:`play_episodes`.

    With the same ``envs``, ``episodes`` and ``seed`` the conversations match the policy's one for one
    (with the replay customer), so the two can be compared turn by turn.
    """

    def write(active: list[int]) -> list[str]:
        return [envs.bare[i].logged_action() or "" for i in active]

    return _play(envs, episodes, seed, write, max_turns)


def default_policy_config(policy) -> PolicyConfig:
    """``PolicyConfig()``'s generation settings, ``max_new_tokens`` lowered to fit ``policy``'s context."""
    context = policy.context_length or PolicyConfig().n_positions
    return PolicyConfig(n_positions=context, max_new_tokens=min(PolicyConfig().max_new_tokens, context // 4))
