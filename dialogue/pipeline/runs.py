"""A trained run folder, opened for the jobs that use it: ``csrl score / serve / simulate / eval``.

Layout written by ``csrl train`` (see :mod:`csrl.dialogue.pipeline.training`)::

    runs/NAME/
      config.json        the TrainConfig
      rewards/           KB index, intent and satisfaction classifiers, their held-out metrics
      sft/               the supervised policy (safetensors) and its tokenizer
      ppo/               PPO checkpoints, metrics.jsonl, TensorBoard log, plots, trajectory buffers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from csrl.data import Corpus
from csrl.data.files import is_done
from csrl.dialogue.models.policy import POLICY_FILE
from csrl.dialogue.pipeline.config import TrainConfig, load_config
from csrl.dialogue.pipeline.training import load_training_corpus

POLICIES = ("ppo", "sft", "human")


@dataclass
class Run:
    """An opened run: its config and data now, its reward models and policies when first asked for."""

    path: Path
    config: TrainConfig
    _corpus: Corpus | None = field(default=None, repr=False)

    @cached_property
    def corpus(self) -> Corpus:
        """The run's logs and KB, cut as in training (same seed, so the same held-out split).

        Conversations the logs left unlabelled carry the intents training inferred for them.
        """
        from csrl.dialogue.pipeline.inference import apply_assignments

        return self._corpus or apply_assignments(load_training_corpus(self.config.data), self.path / "rewards")

    @cached_property
    def stack(self):
        """The trained reward models (:class:`csrl.rewards.stack.RewardStack`)."""
        from csrl.rewards.stack import load_reward_stack

        return load_reward_stack(self.path / "rewards")

    def scorer(self):
        """A :class:`~csrl.dialogue.serving.scoring.TurnScorer` over the run's reward, KB and intents."""
        from csrl.dialogue.serving.scoring import TurnScorer

        # the reward folder holds its own copy of the KB: scoring never reloads the logs
        return TurnScorer(self.stack.reward, self.stack.documents, self.stack.intents)

    def policy_folder(self, which: str) -> Path:
        """Where policy ``which`` (``ppo`` or ``sft``) is saved; a missing one is a clear error."""
        if which == "sft":
            folder = self.path / "sft"
        elif which == "ppo":
            from csrl.dialogue.trainer.checkpoints import latest_policy_folder

            folder = latest_policy_folder(self.path / "ppo")
        else:
            raise ValueError(f"policy {which!r}: expected 'ppo' or 'sft' ('human' replays the logs)")
        if folder is None or not (folder / POLICY_FILE).exists():
            raise FileNotFoundError(
                f"{self.path}: no trained {which} policy yet; run `csrl train --out {self.path} --resume` to finish it"
            )
        return folder

    def policy(self, which: str):
        """Policy ``which`` (``ppo`` or ``sft``), loaded in eval mode."""
        from csrl.dialogue.models.policy import ActorCritic

        policy = ActorCritic.load(self.policy_folder(which))  # in the dtype it was trained in
        policy.eval()
        return policy

    def replier(self, which: str = "ppo"):
        """A :class:`~csrl.dialogue.serving.reply.Replier`: policy ``which`` answering with the run's KB and reward."""
        from csrl.dialogue.serving.reply import Replier

        stack = self.stack
        return Replier(self.policy(which), stack.reward, stack.retriever, policy_config=self.config.policy,
                       search_top_k=self.config.env.search_top_k,
                       max_observation_chars=self.config.env.max_observation_chars)  # fmt: skip


def open_run(path: str | Path) -> Run:
    """Open a run folder written by ``csrl train`` (its config must be there; models load lazily)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder; train one with `csrl train --out {path}`")
    if not is_done(path / "rewards"):
        raise FileNotFoundError(
            f"{path}: its reward models are not trained yet; run `csrl train --out {path} --resume`"
        )
    return Run(path=path, config=load_config(path))
