"""The PPO training loop: rollout, update, checkpoint, log -- resumable from the last complete iteration.

Run directory written by :func:`train_ppo`::

    run_dir/
      ppo_config.json            PPOConfig and the generation settings of the run
      reference/                 the frozen reference policy (the starting policy), saved once (not for LoRA)
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

Several processes (:mod:`csrl.dialogue.trainer.processes`) each play ``rollout_batch_size`` episodes of their own
(seeded by their rank too), update one model together (DDP), and log the rollouts of all; the main process writes
the folder. A checkpoint is the same whoever wrote it, so a run resumes with any number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from csrl.data.files import write_text_atomic
from csrl.dialogue.config import PolicyConfig, PPOConfig
from csrl.dialogue.trainer import processes
from csrl.dialogue.trainer.buffer import TrajectoryBuffer
from csrl.dialogue.trainer.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from csrl.dialogue.trainer.generation import default_policy_config
from csrl.dialogue.trainer.ppo import TurnTensors, compute_advantages, ppo_update
from csrl.dialogue.trainer.rollout import RolloutStats, collect_rollouts, episode_seed

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


def rollout_metrics(buffer: TrajectoryBuffer, stats: RolloutStats, turns: list[TurnTensors]) -> dict[str, float]:
    """``charts/*`` of one rollout: rewards per episode, per turn and per stage, the KL to the reference, search rate.

    ``charts/reward_<stage>`` is the stage's weighted reward per turn (what it adds to the composite);
    ``charts/score_<stage>`` its raw score. ``charts/kl_to_ref`` is the mean per policy token of
    ``log pi_old - log pi_ref`` at sampling time (the quantity ``kl_coef`` multiplies);
    ``charts/kl_to_ref_per_turn`` its sum over a turn, averaged over turns.
    """
    records = buffer.records
    metrics = {
        "charts/episodic_reward": float(np.mean(stats.episodic_returns)),
        "charts/episodic_length": float(np.mean([len(ep) for ep in buffer.episodes()])),
        "charts/reward_per_turn": float(np.mean([r.reward for r in records])),
        "charts/search_rate": float(np.mean([0 in r.action_mask for r in records])),
        "charts/terminated_rate": float(np.mean([ep[-1].done for ep in buffer.episodes()])),
        "charts/policy_tokens_per_turn": float(np.mean([sum(r.action_mask) for r in records])),
    }
    for stage in sorted({name for r in records for name in r.stage_rewards}):
        metrics[f"charts/reward_{stage}"] = float(np.mean([r.stage_rewards.get(stage, 0.0) for r in records]))
    for stage in sorted({name for r in records for name in r.components}):
        metrics[f"charts/score_{stage}"] = float(np.mean([r.components.get(stage, 0.0) for r in records]))
    kl_per_turn, policy_tokens = [], 0
    for r in records:
        kl = [(lp - ref) * m for lp, ref, m in zip(r.logprobs, r.ref_logprobs, r.action_mask, strict=True)]
        kl_per_turn.append(sum(kl))
        policy_tokens += sum(r.action_mask)
    metrics["charts/kl_to_ref"] = float(sum(kl_per_turn) / max(policy_tokens, 1))
    metrics["charts/kl_to_ref_per_turn"] = float(np.mean(kl_per_turn))
    mask = torch.cat([t.action_mask[-len(t.rewards) :] for t in turns]).bool()
    metrics["charts/token_reward"] = float(torch.cat([t.rewards for t in turns])[mask].mean())
    return metrics


def gather_rollouts(buffer: TrajectoryBuffer, stats: RolloutStats, turns: list[TurnTensors]):
    """Every process's rollout as one: records and turns in rank order, counts summed, times the slowest's."""
    if processes.world_size() == 1:
        return buffer, stats, turns
    every = processes.gather([stats])
    merged = RolloutStats(
        episodes=sum(s.episodes for s in every),
        turns=sum(s.turns for s in every),
        generated_tokens=sum(s.generated_tokens for s in every),
        generate_s=max(s.generate_s for s in every),
        score_s=max(s.score_s for s in every),
        env_s=max(s.env_s for s in every),
        episodic_returns=[r for s in every for r in s.episodic_returns],
    )
    return TrajectoryBuffer(processes.gather(buffer.records)), merged, processes.gather(turns)


def in_step_digests(policy) -> list[str]:
    """Each process's :func:`~csrl.dialogue.trainer.processes.parameter_digest`; raises if they differ."""
    digests = processes.gather([processes.parameter_digest(policy)])
    if len(set(digests)) > 1:
        raise RuntimeError(f"the processes' parameters diverged after an update (digests by rank: {digests})")
    return digests


# -- the loop --------------------------------------------------------------------------------------------


def _saved_reference(policy, reference_dir: Path, resume: bool):
    """The frozen copy of a fully trained policy: saved once at the start, loaded from disk on every (re)start."""
    from csrl.dialogue.models.policy import ActorCritic

    if processes.is_main() and not (resume and (reference_dir / "policy.json").is_file()):
        tmp = reference_dir.with_name(".reference.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        policy.save(tmp)
        if reference_dir.exists():
            shutil.rmtree(reference_dir)
        os.replace(tmp, reference_dir)
    processes.wait()
    # loaded from disk, not deep-copied: a copy can share state with the policy through monkeypatched methods
    reference = ActorCritic.load(reference_dir).to(policy.device)
    return reference.eval().requires_grad_(False)


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
            ``run_dir/reference`` when resuming) is the frozen reference of the KL penalty. An adapted policy (LoRA)
            trains only its adapter and value head; its reference is itself with the adapter disabled.
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
    main, rank, world_size = processes.is_main(), processes.rank(), processes.world_size()
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        write_text_atomic(
            run_dir / "ppo_config.json",
            json.dumps({"ppo": dataclasses.asdict(config), "policy": dataclasses.asdict(policy_config),
                        "world_size": world_size}, indent=2) + "\n",
        )  # fmt: skip

    if policy.is_adapted:  # the same weights with the adapter off: no second copy
        reference = policy.frozen_reference()
    else:
        reference = _saved_reference(policy, run_dir / "reference", resume=found is not None)

    # an adapted policy trains its adapter and value head only: the base weights are frozen
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=1e-5)
    start = 1
    metrics_log = read_metrics(run_dir) if found else []
    if found:
        trainer_state = load_checkpoint(found[1], policy, optimizer)
        start = found[0] + 1
        # drop iterations logged after the checkpoint; restore the checkpoint's own if the kill came before its line
        metrics_log = [m for m in metrics_log if m["iteration"] < found[0]] + [trainer_state["metrics"]]
    model = processes.wrap(policy)  # DDP with several processes: the update's gradients are all-reduced
    if main:
        write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics_log))

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=start) if main else None
    bar = tqdm(range(start, config.total_iterations + 1), desc="PPO", unit="iter", disable=not (progress and main),
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
                seed=episode_seed(config.seed, iteration, rank),
                max_turns=config.turns_per_episode,
                credit=config.credit,
                episode_offset=((iteration - 1) * world_size + rank) * len(envs),
                forward_batch_size=config.minibatch_size,
            )
            rollout_s = time.perf_counter() - iteration_start

            update_start = time.perf_counter()
            turns = compute_advantages(buffer, config)
            losses = ppo_update(
                policy, optimizer, turns, config, seed=episode_seed(config.seed + 1, iteration, rank),
                temperature=policy_config.temperature, model=model,
            )  # fmt: skip
            update_s = time.perf_counter() - update_start

            buffer, stats, turns = gather_rollouts(buffer, stats, turns)
            metrics = {"iteration": iteration, **rollout_metrics(buffer, stats, turns), **losses}
            if world_size > 1:
                metrics["distributed/param_digests"] = in_step_digests(policy)
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
                    "rollout/episodes": stats.episodes,
                    "rollout/turns": stats.turns,
                    "rollout/generated_tokens": stats.generated_tokens,
                    "distributed/world_size": world_size,
                }
            )
            bar.set_postfix(reward=f"{metrics['charts/reward_per_turn']:.3f}", kl=f"{metrics['charts/kl_to_ref']:.3f}")
            if not main:
                continue
            buffer.save(run_dir / "buffers" / f"iter_{iteration:04d}.parquet")
            save_checkpoint(run_dir, iteration, policy, optimizer, metrics, keep=config.keep_checkpoints)
            metrics_log.append(metrics)
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(metrics) + "\n")
            for name, value in metrics.items():
                if name != "iteration" and isinstance(value, int | float) and np.isfinite(value):
                    writer.add_scalar(name, value, iteration)
            writer.flush()
            plot_metrics(metrics_log, run_dir / "plots" / "ppo.png")
    finally:
        if writer is not None:
            writer.close()
        bar.close()

    if main:
        policy.save(run_dir / "policy")
    processes.wait()  # the folder is complete before any process goes on
    return {**metrics, "run_dir": str(run_dir), "iterations": config.total_iterations, "resumed_from": start - 1,
            "world_size": world_size}  # fmt: skip
