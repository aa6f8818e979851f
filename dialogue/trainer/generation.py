r"""The agent turn written in two batched generations, paused after ``search:`` for the environment's results.

Every active environment's dialogue becomes a prompt (:func:`~csrl.dialogue.models.prompts.build_prompt`)
and the policy writes the agent turn for all of them in one batched
:meth:`~csrl.dialogue.models.policy.ActorCritic.generate` that pauses after a ``search:`` line. The rows that
paused get their environment's search results inserted as
:func:`~csrl.dialogue.models.prompts.results_text` tokens -- the environment's, not the policy's: action
mask 0 -- and write their ``reply:`` in a second batched generation. :func:`write_turns` does this for any
prompts and any search (serving answers plain dialogues with the run's KB); :func:`generate_turns` for environments.

Token budget of one turn: the prompt keeps its newest ``n_positions - 2 * max_new_tokens - results cap``
tokens (``results cap = n_positions // 4``), so prompt, both generations and the results block always fit the
context, and the PPO update sees exactly the tokens the policy was conditioned on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from csrl.dialogue.config import PolicyConfig
from csrl.dialogue.models.constraints import IntentConstraint
from csrl.dialogue.models.policy import left_pad
from csrl.dialogue.models.prompts import SEARCH_PAUSE, TURN_END_STOPS, build_prompt, cut_turn_end, results_text
from csrl.env.turn_format import parse_agent_turn


def turn_budget(context_length: int | None, policy_config: PolicyConfig) -> tuple[int, int]:
    """Token budgets ``(prompt, results)`` that keep prompt + both generations + results in the context.

    The context is the model's, cut to ``policy_config.n_positions``: a pretrained LM's 8k positions would cost
    minutes a turn on a CPU, and the newest turns are what the reply depends on.

    >>> turn_budget(256, PolicyConfig(n_positions=256, max_new_tokens=48))
    (96, 64)
    >>> turn_budget(8192, PolicyConfig(n_positions=256, max_new_tokens=48))
    (96, 64)
    """
    context = min(context_length or policy_config.n_positions, policy_config.n_positions)
    results_cap = context // 4
    prompt_budget = context - 2 * policy_config.max_new_tokens - results_cap
    if prompt_budget < 16:
        raise ValueError(
            f"a context of {context} tokens leaves {prompt_budget} for the prompt after 2 × max_new_tokens="
            f"{policy_config.max_new_tokens} and {results_cap} results tokens: lower max_new_tokens"
        )
    return prompt_budget, results_cap


def default_policy_config(policy) -> PolicyConfig:
    """``PolicyConfig()``'s generation settings, ``max_new_tokens`` lowered to fit ``policy``'s context."""
    context = min(policy.context_length or PolicyConfig().n_positions, PolicyConfig().n_positions)
    return PolicyConfig(n_positions=context, max_new_tokens=min(PolicyConfig().max_new_tokens, context // 4))


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
        documents: the search's results (``None``: no search).
    """

    query_ids: list[int]
    response_ids: list[int]
    action_mask: list[int]
    text: str
    action: str
    searched: bool = False
    documents: tuple | None = None


def results_ids(tokenizer, documents, policy_config: PolicyConfig, results_cap: int) -> list[int]:
    """The tokens of the results block inserted after a ``search:`` line: at most ``results_cap``, newline last."""
    ids = tokenizer(results_text(documents, policy_config.results_char_budget), add_special_tokens=False)["input_ids"]
    if len(ids) > results_cap:  # keep the first documents, and the newline that ends the block
        ids = ids[: results_cap - 1] + tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
    return ids


def prompt_ids(policy, prompts: Sequence[str], policy_config: PolicyConfig) -> list[list[int]]:
    """Each prompt's newest tokens that fit the turn budget (:func:`turn_budget`)."""
    prompt_budget, _ = turn_budget(policy.context_length, policy_config)
    tokenizer = policy.tokenizer
    return [tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"][-prompt_budget:] for p in prompts]


@torch.no_grad()
def generate_turns(
    policy,
    envs,
    indices: Sequence[int],
    policy_config: PolicyConfig,
    temperature: float,
    generator: torch.Generator | None = None,
) -> list[GeneratedTurn]:
    """Write the agent turn of each environment in ``indices`` (see :func:`write_turns`).

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic`.
        envs: the :class:`~csrl.env.lockstep.LockstepEnvs`; their histories are the prompts, their searches
            the results.
        indices: the environments to write for (active ones).
        policy_config: the generation settings (see :func:`write_turns`).
        temperature: sampling temperature (0: greedy).
        generator: seeded sampling.

    Returns:
        One :class:`GeneratedTurn` per index, in order.
    """
    indices = list(indices)
    prompts = [build_prompt(envs.bare[i].history, envs.bare[i].config.max_observation_chars) for i in indices]

    def search(queries: dict[int, str]) -> dict[int, tuple]:
        found = envs.search({indices[row]: query for row, query in queries.items()})
        return {row: found[indices[row]] for row in queries}

    return write_turns(policy, prompts, search, policy_config, temperature, generator)


@torch.no_grad()
def write_turns(
    policy,
    prompts: Sequence[str],
    search: Callable[[dict[int, str]], dict[int, Sequence]],
    policy_config: PolicyConfig,
    temperature: float,
    generator: torch.Generator | None = None,
) -> list[GeneratedTurn]:
    """Write one agent turn after each prompt with two batched generations, searching where the policy asks.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic`.
        prompts: :func:`~csrl.dialogue.models.prompts.build_prompt` of each dialogue.
        search: row -> query in, row -> documents out (an environment's search, or the run's KB at serving time).
        policy_config: ``max_new_tokens``, ``top_k``, ``stop_on_repetition``, ``constrain_intent`` (to
            ``policy.intents``) and ``results_char_budget`` of the policy config.
        temperature: sampling temperature (0: greedy).
        generator: seeded sampling.

    Returns:
        One :class:`GeneratedTurn` per prompt, in order.
    """
    tokenizer = policy.tokenizer
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    _, results_cap = turn_budget(policy.context_length, policy_config)
    query_ids = prompt_ids(policy, prompts, policy_config)
    sample = dict(max_new_tokens=policy_config.max_new_tokens, temperature=temperature, top_k=policy_config.top_k,
                  stop_on_repetition=policy_config.stop_on_repetition)  # fmt: skip
    constrained = policy_config.constrain_intent and policy.intents
    first = policy.generate(
        *left_pad(query_ids, pad_id, policy.device), stop=[SEARCH_PAUSE, *TURN_END_STOPS], generator=generator,
        constraint=IntentConstraint(tokenizer, policy.intents) if constrained else None, **sample,
    )  # fmt: skip
    paused = [
        row
        for row, (text, reason) in enumerate(zip(first.texts, first.stop_reasons, strict=True))
        if reason == "stop" and SEARCH_PAUSE.search(text) and cut_turn_end(text) == text
    ]
    documents = search({row: parse_agent_turn(first.texts[row]).search or "" for row in paused})
    inserted = {row: results_ids(tokenizer, documents[row], policy_config, results_cap) for row in paused}
    second_rows = {}
    if paused:
        second = policy.generate(
            *left_pad([query_ids[r] + first.tokens[r] + inserted[r] for r in paused], pad_id, policy.device),
            stop=list(TURN_END_STOPS),
            generator=generator,
            **sample,
        )
        second_rows = {row: second.tokens[k] for k, row in enumerate(paused)}

    turns = []
    for row in range(len(prompts)):
        response, mask = list(first.tokens[row]), [1] * len(first.tokens[row])
        if row in second_rows:
            tokens2 = second_rows[row]
            response += inserted[row] + tokens2
            mask += [0] * len(inserted[row]) + [1] * len(tokens2)
        text = tokenizer.decode([t for t in response if t != eos_id], skip_special_tokens=False)
        turns.append(
            GeneratedTurn(
                query_ids=list(query_ids[row]),
                response_ids=response,
                action_mask=mask,
                text=text,
                action=cut_turn_end(text),
                searched=row in second_rows,
                documents=tuple(documents[row]) if row in second_rows else None,
            )
        )
    return turns
