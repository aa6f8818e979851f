r"""PPO on conversations, the maths of one iteration: rewards, GAE over the episode's agent tokens, clipped update.

Reads top to bottom like CleanRL's ``ppo.py``; the loop that calls it (rollouts, checkpoints, logging) is
:mod:`csrl.dialogue.trainer.ppo_trainer`. Names follow the paper: ``advantages``, ``returns``, ``pg_loss``, ``v_loss``,
``approx_kl``, ``clipfrac``; ``b_`` is the whole batch, ``mb_`` a minibatch.

1. **Per-token rewards.** On each policy token ``t`` of a turn:
   ``r_t = placed stage rewards_t - kl_coef * (log pi_old(a_t) - log pi_ref(a_t))``, where the stage rewards
   sit where :func:`~csrl.dialogue.trainer.credit.place_rewards` put them (``TurnRecord.token_rewards``: each
   stage on the last token of the step it scores, or the composite on the turn's last token).
2. **GAE over the episode.** The policy's tokens of an episode's turns, chained in order, are one sequence of
   steps; prompt, customer and inserted results tokens are not steps (mask 0). The last step is ``done`` if
   the episode terminated; a truncated episode bootstraps with ``V`` of the state after its last turn.
3. **Whitened advantages** over the batch's policy tokens.
4. **Clipped policy loss, clipped value loss, entropy**, minibatch epochs over the turns, grad-norm clipping.

Hand-checkable: one turn of two policy tokens, a reward of 1 on the last, no KL, gamma = lam = 1:

>>> from csrl.dialogue.trainer.buffer import TrajectoryBuffer, TurnRecord
>>> from csrl.dialogue.config import PPOConfig
>>> record = TurnRecord(episode_id=0, turn_index=0, state="", action="", reward=1.0, done=True,
...     query_ids=[1], response_ids=[2, 3, 4], action_mask=[1, 0, 1], logprobs=[-1.0, 0.0, -1.0],
...     values=[0.25, 0.0, 0.5], ref_logprobs=[-1.0, 0.0, -1.0], token_rewards=[0.0, 0.0, 1.0])
>>> turns = compute_advantages(TrajectoryBuffer([record]), PPOConfig(gamma=1.0, lam=1.0, kl_coef=0.1,
...     whiten_advantages=False))
>>> turns[0].advantages.tolist(), turns[0].returns.tolist()
([0.75, 0.0, 0.5], [1.0, 0.0, 1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from csrl.dialogue.config import PPOConfig
from csrl.dialogue.models.policy import action_scores, left_pad
from csrl.dialogue.trainer import processes
from csrl.dialogue.trainer.buffer import TrajectoryBuffer
from csrl.dialogue.trainer.gae import compute_gae, masked_mean, whiten

# -- 1-3. rewards, GAE, whitening ----------------------------------------------------------------------


@dataclass
class TurnTensors:
    """One turn, ready for the update; every ``(n,)`` tensor is aligned to ``response_ids`` (0 off-policy tokens).

    Attributes:
        input_ids: ``(q + n,)`` prompt and response tokens.
        action_mask: ``(q + n,)`` 1 on the policy's tokens (never on the prompt or the results block).
        logprobs: ``(n,)`` log pi_old of each response token.
        values: ``(n,)`` V_old of the state that chose it.
        rewards: ``(n,)`` placed stage rewards minus the KL penalty.
        advantages: ``(n,)`` GAE advantages (whitened over the batch when configured).
        returns: ``(n,)`` advantages + values (before whitening).
    """

    input_ids: torch.Tensor
    action_mask: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def compute_advantages(buffer: TrajectoryBuffer, config: PPOConfig) -> list[TurnTensors]:
    """Per-token rewards with the KL penalty, GAE over each episode's policy tokens, whitened advantages.

    Gather (each episode's policy tokens as one row of steps) -> :func:`~csrl.dialogue.trainer.gae.compute_gae`
    -> scatter (back onto each turn's response tokens).

    Args:
        buffer: one rollout (every turn with ``logprobs``, ``values``, ``ref_logprobs``, ``token_rewards``).
        config: ``kl_coef``, ``gamma``, ``lam``, ``whiten_advantages``.

    Returns:
        One :class:`TurnTensors` per record of ``buffer``, in the buffer's order.
    """
    for record in buffer:
        if not record.ref_logprobs or not record.token_rewards:
            raise ValueError(
                f"episode {record.episode_id} turn {record.turn_index} has no ref_logprobs or token_rewards: "
                "collect the buffer with csrl.dialogue.trainer.rollout.collect_rollouts"
            )
        if sum(record.action_mask) == 0:
            raise ValueError(f"episode {record.episode_id} turn {record.turn_index} has no policy token")
    episodes = buffer.episodes()
    steps = gather_episode_steps(episodes, config.kl_coef)
    b_advantages, b_returns = compute_gae(
        steps.rewards, steps.values, steps.dones, steps.last_values, gamma=config.gamma, lam=config.lam
    )  # (E, N), (E, N)
    if config.whiten_advantages:
        b_advantages = whiten(b_advantages, steps.mask)
    return scatter_to_turns(buffer, episodes, steps, b_advantages, b_returns)


@dataclass
class EpisodeSteps:
    """A rollout's episodes as rows of steps (their policy tokens in order), left-padded to one width ``N``.

    Left padding makes every episode end at the last column, where its own ``last_values`` entry bootstraps
    it; GAE runs backwards, so the padding in front never reaches a real step.

    Attributes:
        rewards: ``(E, N)`` placed stage rewards minus ``kl_coef`` times the sampled KL.
        values: ``(E, N)`` V_old of each step.
        dones: ``(E, N)`` 1 on the last step of a terminated episode.
        last_values: ``(E,)`` V of the state after a truncated episode (0 for a terminated one).
        mask: ``(E, N)`` True on real steps.
        lengths: steps of each episode.
    """

    rewards: torch.Tensor
    values: torch.Tensor
    dones: torch.Tensor
    last_values: torch.Tensor
    mask: torch.Tensor
    lengths: list[int]


def gather_episode_steps(episodes: list[list], kl_coef: float) -> EpisodeSteps:
    """Each episode's policy tokens, chained over its turns, as one row of :class:`EpisodeSteps`."""
    steps_rewards, steps_values, last_values, terminated = [], [], [], []
    for turns in episodes:
        rewards, values = [], []
        for record in turns:
            mask = torch.tensor(record.action_mask, dtype=torch.bool)  # (n,)
            kl = torch.tensor(record.logprobs) - torch.tensor(record.ref_logprobs)  # (n,)
            token_rewards = torch.tensor(record.token_rewards, dtype=torch.float32) - kl_coef * kl
            rewards.append(token_rewards[mask].float())
            values.append(torch.tensor(record.values, dtype=torch.float32)[mask])
        steps_rewards.append(torch.cat(rewards))
        steps_values.append(torch.cat(values))
        last = turns[-1]
        terminated.append(last.done)
        last_values.append(last.bootstrap_value if last.truncated else 0.0)

    width = max(len(r) for r in steps_rewards)
    b_rewards = torch.zeros(len(episodes), width)  # (E, N)
    b_values = torch.zeros(len(episodes), width)  # (E, N)
    b_dones = torch.zeros(len(episodes), width)  # (E, N)
    b_steps = torch.zeros(len(episodes), width, dtype=torch.bool)  # (E, N) real steps
    for e, (rewards, values) in enumerate(zip(steps_rewards, steps_values, strict=True)):
        b_rewards[e, width - len(rewards) :] = rewards
        b_values[e, width - len(values) :] = values
        b_dones[e, -1] = float(terminated[e])
        b_steps[e, width - len(rewards) :] = True
    return EpisodeSteps(b_rewards, b_values, b_dones, torch.tensor(last_values), b_steps,
                        [len(r) for r in steps_rewards])  # fmt: skip


def scatter_to_turns(
    buffer: TrajectoryBuffer,
    episodes: list[list],
    steps: EpisodeSteps,
    b_advantages: torch.Tensor,
    b_returns: torch.Tensor,
) -> list[TurnTensors]:
    """The ``(E, N)`` step tensors put back on each turn's response tokens (0 on off-policy tokens)."""
    order = {id(record): k for k, record in enumerate(buffer.records)}
    width = steps.rewards.shape[1]
    out: list[TurnTensors | None] = [None] * len(buffer)
    for e, turns in enumerate(episodes):
        step = width - steps.lengths[e]  # the episode's first column
        for record in turns:
            n = len(record.response_ids)
            mask = torch.tensor(record.action_mask, dtype=torch.bool)  # (n,)
            k = int(mask.sum())
            advantages, returns, rewards = torch.zeros(n), torch.zeros(n), torch.zeros(n)  # (n,) each
            advantages[mask] = b_advantages[e, step : step + k]
            returns[mask] = b_returns[e, step : step + k]
            rewards[mask] = steps.rewards[e, step : step + k]
            step += k
            out[order[id(record)]] = TurnTensors(
                input_ids=torch.tensor(record.query_ids + record.response_ids, dtype=torch.long),
                action_mask=torch.tensor([0] * len(record.query_ids) + record.action_mask, dtype=torch.long),
                logprobs=torch.tensor(record.logprobs, dtype=torch.float32) * mask,
                values=torch.tensor(record.values, dtype=torch.float32) * mask,
                rewards=rewards,
                advantages=advantages,
                returns=returns,
            )
    return out  # type: ignore[return-value]


# -- 4. the clipped update ---------------------------------------------------------------------------------


def _minibatch(turns: list[TurnTensors], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Left-pad a minibatch of turns; response-aligned tensors go on the last ``n`` columns, where responses sit."""
    input_ids, attention_mask = left_pad([t.input_ids.tolist() for t in turns], pad_id, device)  # (B, T)
    width = input_ids.shape[1]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    for name in ("action_mask", "logprobs", "values", "advantages", "returns"):
        dtype = torch.long if name == "action_mask" else torch.float32
        tensor = torch.zeros(len(turns), width, dtype=dtype)  # (B, T)
        for b, turn in enumerate(turns):
            value = getattr(turn, name)
            tensor[b, width - len(value) :] = value
        batch[name] = tensor.to(device)
    return batch


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) (NaN when the returns do not vary), as CleanRL logs it.

    >>> explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    1.0
    """
    var_returns = returns.var(unbiased=False)
    return math.nan if var_returns == 0 else float(1 - (returns - values).var(unbiased=False) / var_returns)


def minibatch_bounds(turns: int, minibatch_size: int, count: int) -> list[tuple[int, int]]:
    """``count`` ``(start, stop)`` slices over ``turns`` shuffled turns.

    Slices of ``minibatch_size`` (the last shorter) when that makes ``count``; else ``count`` near-equal slices:
    with several processes every process must take as many optimizer steps (each is one all-reduce), and their
    rollouts may hold different numbers of turns (episodes end early). A slice may be empty when a process has
    fewer turns than steps; it still joins the all-reduce, with a zero loss.

    >>> minibatch_bounds(9, 4, 3), minibatch_bounds(9, 4, 2), minibatch_bounds(1, 4, 2)
    ([(0, 4), (4, 8), (8, 9)], [(0, 5), (5, 9)], [(0, 1), (1, 1)])
    """
    if math.ceil(turns / minibatch_size) == count:
        return [(start, min(start + minibatch_size, turns)) for start in range(0, turns, minibatch_size)]
    edges = [-(-k * turns // count) for k in range(count + 1)]  # ceil(k * turns / count): empty slices come last
    return list(zip(edges[:-1], edges[1:], strict=True))


def ppo_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    turns: list[TurnTensors],
    config: PPOConfig,
    *,
    seed: int,
    temperature: float = 1.0,
    model: nn.Module | None = None,
) -> dict[str, float]:
    """Minibatch epochs of the clipped PPO objective over the rollout's turns; updates ``policy`` in place.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic` (its ``forward`` gives logits and values).
        optimizer: its optimizer.
        turns: :func:`compute_advantages` of the rollout (this process's share when there are several).
        config: ``update_epochs``, ``minibatch_size``, ``clip_coef``, ``clip_vloss``, ``vf_clip_coef``,
            ``vf_coef``, ``ent_coef``, ``max_grad_norm``, ``target_kl``.
        seed: the minibatch order's seed.
        temperature: the sampling temperature of the rollout (the log-probs are of that distribution).
        model: what to call for the forward pass: ``policy`` wrapped for data parallelism
            (:func:`~csrl.dialogue.trainer.processes.wrap`); default ``policy``. With several processes every one
            takes the same number of steps and the same early stop (``target_kl`` on the mean over processes).

    Returns:
        ``losses/*`` metrics (means over the minibatches), ``losses/explained_variance`` and the counts
        ``update/tokens`` (non-padding tokens through forward and backward) and ``update/minibatches``.
    """
    pad_id = policy.tokenizer.pad_token_id
    device = policy.device
    model = model if model is not None else policy
    generator = torch.Generator().manual_seed(seed)
    steps = max(processes.gather([math.ceil(len(turns) / config.minibatch_size)]))  # per epoch, on every process
    model.train()
    sums: dict[str, float] = {}
    minibatches, tokens = 0, 0
    for _epoch in range(config.update_epochs):
        b_inds = torch.randperm(len(turns), generator=generator).tolist()
        epoch_kls = []
        for start, stop in minibatch_bounds(len(turns), config.minibatch_size, steps):
            chosen = b_inds[start:stop] or b_inds[:1]  # an empty slice: one turn, masked out (a zero loss)
            mb = _minibatch([turns[i] for i in chosen], pad_id, device)
            mb_mask = mb["action_mask"] * (stop > start)  # (B, T)
            logits, values = model(mb["input_ids"], mb["attention_mask"])  # (B, T, V), (B, T)
            newlogprob, entropy, newvalue = action_scores(
                logits, values, mb["input_ids"], mb_mask, temperature
            )  # (B, T) each
            logratio = newlogprob - mb["logprobs"]  # (B, T)
            ratio = logratio.exp()  # (B, T)
            with torch.no_grad():
                old_approx_kl = masked_mean(-logratio, mb_mask)
                approx_kl = masked_mean((ratio - 1) - logratio, mb_mask)
                clipfrac = masked_mean(((ratio - 1.0).abs() > config.clip_coef).float(), mb_mask)

            mb_advantages = mb["advantages"]  # (B, T), whitened over the batch already
            pg_loss1 = -mb_advantages * ratio
            pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - config.clip_coef, 1 + config.clip_coef)
            pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mb_mask)

            mb_returns, mb_values = mb["returns"], mb["values"]  # (B, T)
            v_loss_unclipped = (newvalue - mb_returns) ** 2
            if config.clip_vloss:
                v_clipped = mb_values + torch.clamp(newvalue - mb_values, -config.vf_clip_coef, config.vf_clip_coef)
                v_loss_clipped = (v_clipped - mb_returns) ** 2
                v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mb_mask)
            else:
                v_loss = 0.5 * masked_mean(v_loss_unclipped, mb_mask)

            entropy_loss = masked_mean(entropy, mb_mask)
            loss = pg_loss - config.ent_coef * entropy_loss + v_loss * config.vf_coef

            optimizer.zero_grad()
            loss.backward()  # under DDP (several processes) this also all-reduces the gradients
            grad_norm = nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()

            for name, value in (
                ("losses/policy_loss", pg_loss),
                ("losses/value_loss", v_loss),
                ("losses/entropy", entropy_loss),
                ("losses/old_approx_kl", old_approx_kl),
                ("losses/approx_kl", approx_kl),
                ("losses/clipfrac", clipfrac),
                ("losses/grad_norm", grad_norm),
            ):
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            epoch_kls.append(float(approx_kl))
            minibatches += 1
            tokens += int(mb["attention_mask"].sum())
        if config.target_kl is not None and np.mean(processes.gather(epoch_kls)) > config.target_kl:
            break
    model.eval()

    mask = torch.cat([t.action_mask[-len(t.values) :] for t in turns]).bool()  # (N,) policy tokens of the batch
    b_values = torch.cat([t.values for t in turns])[mask]
    b_returns = torch.cat([t.returns for t in turns])[mask]
    metrics = processes.mean_across({name: total / minibatches for name, total in sums.items()})
    metrics["losses/explained_variance"] = explained_variance(b_values, b_returns)
    metrics["update/tokens"] = sum(processes.gather([tokens]))  # over every process
    metrics["update/minibatches"] = minibatches
    return metrics
