"""Step B conversation environments together so the policy generates, and the reward scores, in batches.

Gymnasium's vector envs pass actions through ``step`` one environment at a time, which would
score turns one by one; here every environment prepares its turn, the composite reward scores all
of them in one call (one encoder pass), and each environment finishes its turn. Finished
environments sit out until :meth:`LockstepEnvs.reset` starts the next episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from csrl.env.conversation_env import ConversationEnv


class LockstepEnvs:
    """A plain list of conversation environments sharing one reward, stepped together.

    Args:
        envs: environments from ``gymnasium.make("csrl/Conversation-v0", ...)`` or bare
            :class:`ConversationEnv` objects; they must share one reward object.
        max_turns: the turn limit (truncation); default: each env's registered ``max_episode_steps``.
    """

    def __init__(self, envs: Sequence, max_turns: int | None = None):
        if not envs:
            raise ValueError("LockstepEnvs needs at least one environment")
        self.envs = list(envs)
        self.bare: list[ConversationEnv] = [e.unwrapped for e in self.envs]
        if any(b.reward is not self.bare[0].reward for b in self.bare):
            raise ValueError("all environments must share one reward object (it is called once per batch)")
        limits = [max_turns or (e.spec.max_episode_steps if e.spec else None) for e in self.envs]
        if any(limit is None for limit in limits):
            raise ValueError("no turn limit: pass max_turns or make the envs with gymnasium.make")
        self.max_turns = limits
        self.turns = [0] * len(self.envs)
        self.active = [False] * len(self.envs)

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self, seeds: Sequence[int | None] | None = None, options: Sequence[dict | None] | None = None):
        """Reset every environment; returns ``(observations, infos)`` lists."""
        seeds = list(seeds) if seeds is not None else [None] * len(self)
        options = list(options) if options is not None else [None] * len(self)
        results = [b.reset(seed=s, options=o) for b, s, o in zip(self.bare, seeds, options, strict=True)]
        self.turns = [0] * len(self)
        self.active = [True] * len(self)
        return [r[0] for r in results], [r[1] for r in results]

    def search(self, queries: dict[int, str]) -> dict[int, tuple]:
        """Run the searches of the environments in ``queries`` (env index -> query)."""
        return {i: self.bare[i].search(q) for i, q in queries.items()}

    def step(self, actions: dict[int, str]):
        """Step the active environments named in ``actions`` (env index -> agent turn text).

        Returns:
            dict env index -> ``(obs, reward, terminated, truncated, info)``.
        """
        inactive = [i for i in actions if not self.active[i]]
        if inactive:
            raise RuntimeError(f"environments {inactive} have finished their episodes: reset them first")
        prepared = {i: self.bare[i].prepare_turn(a) for i, a in actions.items()}
        breakdowns = self.bare[0].reward.score([p[0] for p in prepared.values()])
        results = {}
        for (i, (_, parsed, docs)), breakdown in zip(prepared.items(), breakdowns, strict=True):
            obs, reward, terminated, _, info = self.bare[i].finish_turn(parsed, docs, breakdown)
            self.turns[i] += 1
            truncated = not terminated and self.turns[i] >= self.max_turns[i]
            if terminated or truncated:
                self.active[i] = False
                self.bare[i]._done = True
            results[i] = (obs, reward, terminated, truncated, info)
        return results
