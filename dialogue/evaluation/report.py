"""The HTML report of ``csrl simulate``: plots of the per-stage rewards and a few readable conversations.

Input is the transcripts ``csrl simulate`` writes (one dict per episode, with ``policy`` naming who
played the agent, ``turns`` with ``reward``, ``components``, ``customer``, ``reply``, ...). The page
is one self-contained file: the plots are PNGs embedded as base64, nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csrl.rewards.config import STAGES


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _by_policy(episodes: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for episode in episodes:
        groups[episode.get("policy", "policy")].append(episode)
    return dict(groups)


def stage_curves(episodes: Sequence[dict]) -> dict[str, dict[str, list[float]]]:
    """Mean raw score of each stage at each turn index: ``{stage: {"mean": [...], "n": [...]}}``.

    >>> eps = [{"turns": [{"components": {"intent": 1.0}}, {"components": {"intent": -1/3}}]},
    ...        {"turns": [{"components": {"intent": 0.0}}]}]
    >>> stage_curves(eps)["intent"]
    {'mean': [0.5, -0.3333], 'n': [2, 1]}
    """
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for episode in episodes:
        for index, turn in enumerate(episode["turns"]):
            for stage, score in turn.get("components", {}).items():
                values[stage][index].append(float(score))
    curves = {}
    for stage, per_turn in values.items():
        turns = sorted(per_turn)
        curves[stage] = {
            "mean": [round(float(np.mean(per_turn[t])), 4) for t in turns],
            "n": [len(per_turn[t]) for t in turns],
        }
    return curves


def _plots(episodes: Sequence[dict]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = _by_policy(episodes)
    figures = []

    fig, axes = plt.subplots(1, len(STAGES), figsize=(13, 3.4), sharex=True)
    for axis, stage in zip(axes, STAGES, strict=True):
        for name, group in groups.items():
            curve = stage_curves(group).get(stage)
            if curve:
                axis.plot(range(1, len(curve["mean"]) + 1), curve["mean"], marker="o", label=name)
        axis.set_title(f"{stage} (raw score)")
        axis.set_xlabel("agent turn")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figures.append(("Reward per stage over the turns", _png(fig)))
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(6.5, 3.4))
    for name, group in groups.items():
        rewards = [t["reward"] for e in group for t in e["turns"]]
        axis.hist(rewards, bins=30, range=(-0.1, 1.0), alpha=0.5, label=f"{name} ({len(rewards)} turns)")
    axis.set_xlabel("composite reward per turn")
    axis.set_ylabel("turns")
    axis.legend()
    figures.append(("Distribution of the turn reward", _png(fig)))
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(6.5, 3.4))
    names = list(groups)
    summaries = [summarize(groups[name]) for name in names]
    means = [s["reward"] for s in summaries]
    errors = np.array([[s["reward"] - s["ci95"][0], s["ci95"][1] - s["reward"]] for s in summaries]).T
    axis.bar(names, means, yerr=errors, capsize=6, color=[f"C{i}" for i in range(len(names))])
    axis.set_ylabel("mean reward per turn (95% CI)")
    figures.append(("Policy against the human reference", _png(fig)))
    plt.close(fig)
    return figures


def _mean_reward(episode: dict) -> float:
    return float(np.mean([t["reward"] for t in episode["turns"]]))


def _mean_ci95(values: Sequence[float]) -> tuple[float, list[float], int]:
    """Mean of ``values`` with a 95% normal interval (zero width for one value; NaN for none), rounded to 4."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), [float("nan"), float("nan")], 0
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return round(mean, 4), [round(mean - half, 4), round(mean + half, 4)], len(values)


def summarize(episodes: Sequence[dict]) -> dict:
    """Mean composite reward per turn over episodes, with a 95% normal CI over episode means.

    >>> summarize([{"turns": [{"reward": 1.0}, {"reward": 0.0}]}, {"turns": [{"reward": 0.5}]}])
    {'reward': 0.5, 'ci95': [0.5, 0.5], 'n': 2}
    """
    mean, ci95, n = _mean_ci95([_mean_reward(e) for e in episodes if e["turns"]])
    return {"reward": mean, "ci95": ci95, "n": n}


def paired_difference(episodes: Sequence[dict], baseline: Sequence[dict]) -> dict:
    """Mean per-episode reward of ``episodes`` minus ``baseline`` on the same conversations, with a 95% normal CI.

    Both lists come from agents that played the same held-out conversations in the same order (``csrl eval``
    uses the same environment seeds for every agent), so the conversation's own difficulty cancels out.

    >>> a = [{"conversation_id": c, "turns": [{"reward": r}]} for c, r in (("x", 0.5), ("y", 0.75))]
    >>> b = [{"conversation_id": c, "turns": [{"reward": r}]} for c, r in (("x", 0.25), ("y", 0.25))]
    >>> paired_difference(a, b)
    {'difference': 0.375, 'ci95': [0.13, 0.62], 'n': 2}
    """
    if len(episodes) != len(baseline):
        raise ValueError(f"paired episodes must match one to one, got {len(episodes)} and {len(baseline)}")
    for i, (a, b) in enumerate(zip(episodes, baseline, strict=True)):
        if a.get("conversation_id") != b.get("conversation_id"):
            raise ValueError(
                f"episode {i} is conversation {a.get('conversation_id')!r} for one agent and "
                f"{b.get('conversation_id')!r} for the other: play both with the same seed"
            )
    pairs = [(a, b) for a, b in zip(episodes, baseline, strict=True) if a["turns"] and b["turns"]]
    diffs = [_mean_reward(a) - _mean_reward(b) for a, b in pairs]
    mean, ci95, n = _mean_ci95(diffs)
    return {"difference": mean, "ci95": ci95, "n": n}


def _conversation_html(episode: dict) -> str:
    rows = []
    for turn in episode["turns"]:
        for message in turn.get("customer", []):
            rows.append(f'<div class="customer"><b>customer</b> {html.escape(message)}</div>')
        scores = ", ".join(f"{k} {v:+.2f}" for k, v in turn.get("components", {}).items())
        search = f'<div class="search">search: {html.escape(turn["search"])}</div>' if turn.get("search") else ""
        rows.append(
            f'<div class="agent"><b>agent</b> <span class="intent">[{html.escape(str(turn.get("intent") or "-"))}]'
            f"</span> {html.escape(turn.get('reply', ''))}{search}"
            f'<div class="scores">reward {turn["reward"]:+.3f} ({html.escape(scores)})</div></div>'
        )
    ending = "customer left" if episode.get("customer_left") else ("ended" if episode.get("terminated") else "cut")
    title = (
        f"{html.escape(str(episode.get('policy', '')))}: {html.escape(str(episode.get('conversation_id')))} "
        f"({html.escape(str(episode.get('intent')))}), mean reward {summarize([episode])['reward']:+.3f}, {ending}"
    )
    return f"<details><summary>{title}</summary>{''.join(rows)}</details>"


def write_report(episodes: Sequence[dict], path: str | Path, *, title: str = "csrl simulation", examples: int = 4):
    """Write the self-contained HTML report of ``episodes`` to ``path``; returns the path."""
    if not episodes:
        raise ValueError("no episodes to report: simulate at least one")
    groups = _by_policy(episodes)
    summary_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s['reward']:+.4f}</td><td>[{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}]"
        f"</td><td>{s['n']}</td></tr>"
        for name, s in ((name, summarize(group)) for name, group in groups.items())
    )
    plots = "".join(
        f'<h2>{html.escape(caption)}</h2><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        for caption, data in _plots(episodes)
    )
    shown = "".join(_conversation_html(e) for group in groups.values() for e in group[:examples])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}
.customer {{ background: #eef3fb; margin: 4px 0; padding: 4px 8px; border-radius: 6px; }}
.agent {{ background: #f3f7ee; margin: 4px 0 4px 3em; padding: 4px 8px; border-radius: 6px; }}
.scores, .search, .intent {{ color: #666; font-size: 0.85em; }} img {{ max-width: 100%; }}
details {{ margin: 0.6em 0; }} summary {{ cursor: pointer; font-weight: 600; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(episodes)} episodes. Reward per turn = 0.3 × intent (+1 / −1/3) + 0.5 × retrieval [0, 1]
+ 0.2 × satisfaction [0, 1] (weights from the run's config).</p>
<table><tr><th>agent</th><th>mean reward per turn</th><th>95% CI</th><th>episodes</th></tr>{summary_rows}</table>
{plots}
<h2>Example conversations</h2>{shown}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
