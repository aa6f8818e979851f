"""The weighted multi-stage process reward: one total per agent turn, with its per-stage breakdown.

>>> class Const:
...     def __init__(self, value): self.value = value
...     def score(self, contexts): return [self.value] * len(contexts)
>>> reward = CompositeReward({"intent": Const(1.0), "retrieval": Const(0.5), "satisfaction": Const(0.25)},
...                          {"intent": 0.3, "retrieval": 0.5, "satisfaction": 0.2})
>>> result = reward.score([None])[0]
>>> round(result.total, 4), result.components["retrieval"], round(result.weighted["intent"], 4)
(0.6, 0.5, 0.3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from csrl.rewards.context import TurnContext


class RewardComponent(Protocol):
    """Anything with a batched ``score(contexts) -> list[float]`` (its range in its docstring)."""

    def score(self, contexts: Sequence[TurnContext]) -> list[float]:
        """One score per context."""
        ...


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward of one turn.

    Attributes:
        total: sum over components of weight × raw score.
        components: each component's raw score (its own range, e.g. intent in [−1/3, 1]).
        weighted: each component's weight × raw score (what it added to ``total``).
    """

    total: float
    components: dict[str, float]
    weighted: dict[str, float]

    def to_dict(self) -> dict:
        """JSON form: ``{"reward", "components", "weighted"}``."""
        return {"reward": self.total, "components": dict(self.components), "weighted": dict(self.weighted)}


class CompositeReward:
    """Weighted sum of reward components, scored in one batch.

    Components with weight 0 are still scored and reported (so they can be watched) unless
    ``skip_zero_weight`` is set, which saves their cost.

    Args:
        components: name -> component.
        weights: name -> weight; every component needs one.
        skip_zero_weight: leave weight-0 components out of the computation.
        gates: name -> gating component: the named component's score is multiplied by the gate's raw score (in
            [0, 1]) before weighting; the ungated score is reported as ``NAME_ungated`` (unweighted).
    """

    def __init__(
        self,
        components: Mapping[str, RewardComponent],
        weights: Mapping[str, float],
        *,
        skip_zero_weight: bool = False,
        gates: Mapping[str, str] | None = None,
    ):
        missing = sorted(set(components) - set(weights))
        extra = sorted(set(weights) - set(components))
        if missing or extra:
            raise ValueError(f"weights must name exactly the components; missing {missing}, unknown {extra}")
        if not components:
            raise ValueError("a composite reward needs at least one component")
        self.components = dict(components)
        self.weights = {name: float(weights[name]) for name in components}
        self.skip_zero_weight = skip_zero_weight
        self.gates = dict(gates or {})
        unknown = sorted(set(self.gates.items()) - {(a, b) for a in components for b in components if a != b})
        if unknown:
            raise ValueError(f"gates {unknown}: each must pair two different components")

    def score(self, contexts: Sequence[TurnContext]) -> list[RewardBreakdown]:
        """Score a batch of turns; each component sees the whole batch once."""
        contexts = list(contexts)
        raw: dict[str, list[float]] = {}
        for name, component in self.components.items():
            if self.skip_zero_weight and self.weights[name] == 0:
                continue
            scores = component.score(contexts)
            if len(scores) != len(contexts):
                raise RuntimeError(f"component {name!r} returned {len(scores)} scores for {len(contexts)} turns")
            raw[name] = [float(s) for s in scores]
        results = []
        for i in range(len(contexts)):
            components = {name: scores[i] for name, scores in raw.items()}
            for name, gate in self.gates.items():
                if name in components and gate in raw:
                    components[f"{name}_ungated"] = components[name]
                    components[name] *= raw[gate][i]
            weighted = {name: self.weights[name] * components[name] for name in raw}
            results.append(RewardBreakdown(total=sum(weighted.values()), components=components, weighted=weighted))
        return results

    def __call__(self, contexts: Sequence[TurnContext]) -> list[float]:
        """Totals only."""
        return [r.total for r in self.score(contexts)]
