"""The PPO training loop: rollout, update, checkpoint, log -- resumable from the last complete iteration.

Run directory written by :func:`train_ppo`::

    run_dir/
      ppo_config.json            PPOConfig and the generation settings of the run
      reference/                 the frozen reference policy (the starting policy), saved once
      checkpoints/latest.json    {"iteration": n, "path": "iter_000n"}: the last complete iteration
      checkpoints/iter_000n/     policy (ActorCritic.save: safetensors) + state.pt (optimizer, RNG) + trainer_state.json
      buffers/iter_000n.parquet  the rollout of each iteration (TrajectoryBuffer)
      metrics.jsonl              one JSON object per iteration (charts/*, losses/*)
      tb/                        the same metrics as a TensorBoard log
      plots/ppo.png              learning curves
      policy/                    the final policy (ActorCritic.save)

A checkpoint is written to a temporary folder and renamed into place, then ``latest.json`` is replaced
atomically: a kill at any moment leaves the previous complete checkpoint as the latest. Every source of
randomness of an iteration (environment resets, sampling, minibatch order) is seeded from
``(config.seed, iteration)``, so a resumed run repeats exactly what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from csrl.dialogue.config import PolicyConfig, PPOConfig
from csrl.dialogue.trainer.ppo import compute_advantages, ppo_update, rollout_metrics
from csrl.dialogue.trainer.rollout import collect_rollouts, default_policy_config, episode_seed

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE_FILE = "state.pt"
TRAINER_STATE_FILE = "trainer_state.json"


# -- files that must never be half-written ---------------------------------------------------------------


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """``(iteration, folder)`` of the last complete checkpoint in ``run_dir``, or ``None``."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    latest = json.loads(pointer.read_text(encoding="utf-8"))
    return int(latest["iteration"]), pointer.parent / latest["path"]


def save_checkpoint(run_dir: Path, iteration: int, policy, optimizer, metrics: dict, keep: int = 2) -> Path:
    """Write iteration ``iteration``'s checkpoint atomically and point ``latest.json`` at it; keep the last ``keep``."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"iter_{iteration:04d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # a save killed half-way
    policy.save(tmp)
    state = {
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }
    torch.save(state, tmp / STATE_FILE)
    (tmp / TRAINER_STATE_FILE).write_text(json.dumps({"iteration": iteration, "metrics": metrics}) + "\n")
    final = root / name
    if final.exists():  # left by a run that died after this rename but before moving latest.json
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(root / LATEST, json.dumps({"iteration": iteration, "path": name}) + "\n")
    for old in sorted(root.glob("iter_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, policy, optimizer) -> dict:
    """Load a checkpoint into ``policy``, ``optimizer`` and the global RNGs; returns its trainer state."""
    from csrl.dialogue.models.policy import ActorCritic

    saved = ActorCritic.load(folder)
    policy.load_state_dict(saved.state_dict())
    state = torch.load(folder / STATE_FILE, weights_only=False)  # our own file: optimizer state and RNG states
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    return json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def latest_policy_folder(run_dir: str | Path) -> Path | None:
    """The newest policy of a PPO run: the last complete checkpoint, else ``run_dir/policy``; ``None`` if neither."""
    found = latest_checkpoint(run_dir)
    if found and found[1].is_dir():
        return found[1]
    final = Path(run_dir) / "policy"
    return final if final.is_dir() else None


@torch.no_grad()
def kl_to_reference(policy, reference, episodes: list[dict], *, temperature: float = 1.0, batch_size: int = 16) -> dict:
    """How far ``policy`` moved from ``reference``: log pi - log pi_ref on the policy tokens of played turns.

    Each turn of ``episodes`` (transcripts from :func:`~csrl.dialogue.trainer.rollout.play_episodes`, which keep the
    ``prompt``) is re-tokenized as in a rollout (prompt, then the action's pieces; the results block is
    not the policy's). When the episodes were sampled from ``policy`` at ``temperature``, the mean is a
    Monte-Carlo estimate of KL(pi || pi_ref) per token; re-tokenizing the text may pick other (canonical)
    tokens than the sampled ones, so read it as an estimate.

    Returns:
        ``{"kl_per_token", "kl_per_turn", "turns", "tokens"}``.
    """
    from csrl.dialogue.models.prompts import policy_segments
    from csrl.dialogue.trainer.rollout import GeneratedTurn, score_tokens, turn_budget

    tokenizer = policy.tokenizer
    prompt_budget, _ = turn_budget(policy.context_length, default_policy_config(policy))
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
    logprobs, _ = score_tokens(policy, turns, temperature, batch_size)
    ref_logprobs, _ = score_tokens(reference, turns, temperature, batch_size)
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


# -- logs and plots --------------------------------------------------------------------------------------


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The iterations logged in ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


PLOTTED = (
    ("episodic reward", ("charts/episodic_reward",)),
    ("reward per turn, by stage", ("charts/reward_per_turn", "charts/reward_intent", "charts/reward_retrieval",
                                   "charts/reward_satisfaction")),
    ("policy loss", ("losses/policy_loss",)),
    ("value loss", ("losses/value_loss",)),
    ("KL", ("losses/approx_kl", "charts/kl_to_ref")),
    ("entropy / clipfrac", ("losses/entropy", "losses/clipfrac")),
)  # fmt: skip


def plot_metrics(metrics: list[dict], path: Path) -> Path:
    """Learning curves of the logged iterations as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    iterations = [m["iteration"] for m in metrics]
    for ax, (title, names) in zip(axes.flat, PLOTTED, strict=True):
        for name in names:
            if any(name in m for m in metrics):
                ax.plot(iterations, [m.get(name, float("nan")) for m in metrics], marker=".", label=name)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# -- the loop --------------------------------------------------------------------------------------------


def train_ppo(
    policy,
    envs,
    config: PPOConfig,
    run_dir: str | Path,
    *,
    policy_config: PolicyConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train ``policy`` with PPO on the conversations of ``envs``; the policy is updated in place.

    Args:
        policy: the :class:`~csrl.dialogue.models.policy.ActorCritic`, typically after SFT; its state at the start (or
            ``run_dir/reference`` when resuming) is the frozen reference of the KL penalty.
        envs: :class:`~csrl.env.lockstep.LockstepEnvs` of ``config.rollout_batch_size`` environments sharing one reward.
        config: :class:`~csrl.dialogue.config.PPOConfig`; episodes are truncated after ``turns_per_episode`` turns.
        run_dir: where everything is written (see the module docstring).
        policy_config: ``max_new_tokens``, ``temperature``, ``top_k``, ``results_char_budget`` of the rollouts
            (default: :func:`~csrl.dialogue.trainer.rollout.default_policy_config`).
        resume: continue from ``run_dir``'s last complete checkpoint (a fresh start when there is none).
        progress: show a tqdm bar over the iterations.

    Returns:
        The last iteration's metrics, plus ``run_dir``, ``iterations`` (completed in total) and
        ``resumed_from`` (the iteration loaded, 0 for a fresh run).

    Raises:
        ValueError: when ``envs`` does not hold ``rollout_batch_size`` environments, or ``run_dir`` already
            has checkpoints and ``resume`` is not set.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from csrl.dialogue.models.policy import ActorCritic
    from csrl.dialogue.trainer.buffer import TrajectoryBuffer  # noqa: F401  (documents what buffers/ holds)

    run_dir = Path(run_dir)
    if len(envs) != config.rollout_batch_size:
        raise ValueError(
            f"envs holds {len(envs)} environments but rollout_batch_size={config.rollout_batch_size}: "
            "make one environment per episode of a rollout"
        )
    policy_config = policy_config or default_policy_config(policy)
    found = latest_checkpoint(run_dir)
    if found and not resume:
        raise ValueError(
            f"{run_dir} already holds checkpoints (iteration {found[0]}): pass resume=True, or choose a new run_dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(
        run_dir / "ppo_config.json",
        json.dumps({"ppo": dataclasses.asdict(config), "policy": dataclasses.asdict(policy_config)}, indent=2) + "\n",
    )

    reference_dir = run_dir / "reference"
    if not (found and (reference_dir / "policy.json").is_file()):
        tmp = run_dir / ".reference.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        policy.save(tmp)
        if reference_dir.exists():
            shutil.rmtree(reference_dir)
        os.replace(tmp, reference_dir)
    # loaded from disk, not deep-copied: a copy can share state with the policy through monkeypatched methods
    reference = ActorCritic.load(reference_dir).to(policy.device)
    reference.eval().requires_grad_(False)

    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    start = 1
    metrics_log = read_metrics(run_dir) if found else []
    if found:
        trainer_state = load_checkpoint(found[1], policy, optimizer)
        start = found[0] + 1
        # drop iterations logged after the checkpoint; restore the checkpoint's own if the kill came before its line
        metrics_log = [m for m in metrics_log if m["iteration"] < found[0]] + [trainer_state["metrics"]]
    _write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics_log))

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)
    bar = tqdm(range(start, config.total_iterations + 1), desc="PPO", unit="iter", disable=not progress,
               initial=start - 1, total=config.total_iterations)  # fmt: skip
    metrics: dict = dict(metrics_log[-1]) if metrics_log else {}
    try:
        for iteration in bar:
            iteration_start = time.perf_counter()
            if config.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / config.total_iterations
                for group in optimizer.param_groups:
                    group["lr"] = frac * config.learning_rate

            buffer, stats = collect_rollouts(
                policy,
                reference,
                envs,
                policy_config,
                seed=episode_seed(config.seed, iteration),
                max_turns=config.turns_per_episode,
                credit=config.credit,
                episode_offset=(iteration - 1) * len(envs),
                batch_size=config.minibatch_size,
            )
            rollout_s = time.perf_counter() - iteration_start
            buffer.save(run_dir / "buffers" / f"iter_{iteration:04d}.parquet")

            update_start = time.perf_counter()
            turns = compute_advantages(buffer, config)
            losses = ppo_update(
                policy, optimizer, turns, config, seed=episode_seed(config.seed + 1, iteration),
                temperature=policy_config.temperature,
            )  # fmt: skip
            update_s = time.perf_counter() - update_start

            metrics = {"iteration": iteration, **rollout_metrics(buffer, stats, turns), **losses}
            metrics.update(
                {
                    "charts/learning_rate": optimizer.param_groups[0]["lr"],
                    "charts/rollout_tokens_per_s": stats.generate_tokens_per_s,
                    "charts/update_tokens_per_s": losses["update/tokens"] / update_s if update_s > 0 else float("nan"),
                    "charts/rollout_s": rollout_s,
                    "charts/update_s": update_s,
                    "charts/iteration_s": time.perf_counter() - iteration_start,
                    # CleanRL's SPS: environment steps (here: policy tokens written) per second of the iteration
                    "charts/SPS": stats.generated_tokens / (time.perf_counter() - iteration_start),
                    "rollout/generate_s": stats.generate_s,
                    "rollout/score_s": stats.score_s,
                    "rollout/env_s": stats.env_s,
                    "rollout/turns": stats.turns,
                    "rollout/generated_tokens": stats.generated_tokens,
                }
            )
            save_checkpoint(run_dir, iteration, policy, optimizer, metrics, keep=config.keep_checkpoints)
            metrics_log.append(metrics)
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics) + "\n")
            for name, value in metrics.items():
                if name != "iteration" and isinstance(value, int | float) and np.isfinite(value):
                    writer.add_scalar(name, value, iteration)
            writer.flush()
            plot_metrics(metrics_log, run_dir / "plots" / "ppo.png")
            bar.set_postfix(reward=f"{metrics['charts/reward_per_turn']:.3f}", kl=f"{metrics['charts/kl_to_ref']:.3f}")
    finally:
        writer.close()
        bar.close()

    policy.save(run_dir / "policy")
    return {**metrics, "run_dir": str(run_dir), "iterations": config.total_iterations, "resumed_from": start - 1}
