"""The one episode loop: B environments stepped in lockstep until every episode has ended.

PPO's rollouts (:func:`~csrl.dialogue.trainer.rollout.collect_rollouts`) and the evaluation's playback
(:mod:`csrl.dialogue.evaluation.playback`) both play their episodes through :func:`play_lockstep`; they
differ only in who writes the turns and what they record, so the episode's end is decided in one place:

- ``terminated``: the conversation ended (the environment says so);
- ``truncated``: it did not end, but the environment hit its turn limit or this was the last turn
  ``max_turns`` allows. A truncated episode is not done: PPO bootstraps it with ``V`` of its next state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnOutcome:
    """What one environment's step gave.

    Attributes:
        turn_index: the turn's position in its episode (0 for the first agent turn).
        reward: the composite reward of the turn.
        terminated: the conversation ended with this turn.
        truncated: it did not end, but the episode stops here (turn limit).
        info: the environment's ``info`` (``reward_components``, ``reward_weighted``, ``parsed_turn``, ...).
    """

    turn_index: int
    reward: float
    terminated: bool
    truncated: bool
    info: dict

    @property
    def ended(self) -> bool:
        """The episode plays no further turn."""
        return self.terminated or self.truncated


def turn_limits(envs, max_turns: int | None) -> list[int]:
    """Each environment's turn limit, lowered to ``max_turns`` when given."""
    return [min(limit, max_turns) if max_turns else limit for limit in envs.max_turns]


def play_lockstep(
    envs,
    write: Callable[[list[int]], Sequence[str]],
    observe: Callable[[dict[int, TurnOutcome]], None],
    *,
    count: int | None = None,
    max_turns: int | None = None,
) -> None:
    """Play the episodes of the first ``count`` environments of ``envs`` (already reset) to their end.

    Each round, ``write(active)`` gives the agent turn of every active environment (one batched
    generation, or the logged turns), :meth:`~csrl.env.lockstep.LockstepEnvs.step` scores them all in one
    reward call, and ``observe(outcomes)`` sees each environment's :class:`TurnOutcome` before the
    environments whose episode ended drop out.

    Args:
        envs: :class:`~csrl.env.lockstep.LockstepEnvs`, reset by the caller (who chooses the seeds).
        write: active environment indices -> their agent turns' texts, in order.
        observe: called once a round with env index -> :class:`TurnOutcome`.
        count: how many of the environments play (default: all).
        max_turns: end episodes after this many turns (default: the environments' limit).
    """
    count = len(envs) if count is None else count
    limits = turn_limits(envs, max_turns)
    active = [i for i in range(count) if envs.active[i]]
    turn_index = 0
    while active:
        actions = write(active)
        results = envs.step(dict(zip(active, actions, strict=True)))
        outcomes = {}
        for i in active:
            _, reward, terminated, truncated, info = results[i]
            terminated = bool(terminated)
            outcomes[i] = TurnOutcome(
                turn_index=turn_index,
                reward=float(reward),
                terminated=terminated,
                truncated=not terminated and (bool(truncated) or turn_index + 1 >= limits[i]),
                info=info,
            )
        observe(outcomes)
        active = [i for i in active if not outcomes[i].ended]
        turn_index += 1
