"""The named run sizes ``debug`` / ``quick`` / ``full``, in one place, like nanoGPT's ``config/*.py``.

``debug`` takes seconds (for tests) and ``quick`` minutes on a laptop CPU, both with the small GPT-2 trained from
scratch; ``pretrained`` trains SmolLM2-135M-Instruct with LoRA on a CPU (an hour or two); ``full`` is the GPU run.

Each preset is a plain dict holding only what differs from the config dataclasses' defaults, one section
per part of :class:`~csrl.dialogue.pipeline.config.TrainConfig`:

- ``data``: :class:`~csrl.dialogue.pipeline.config.DataConfig` (how much of the logs);
- ``reward``: :class:`~csrl.rewards.config.RewardConfig` (stage weights, encoder);
- ``reward_training``: :class:`~csrl.rewards.config.RewardTrainingConfig` (reward-model training sizes);
- ``policy``: :class:`~csrl.dialogue.config.PolicyConfig` (LM size, generation);
- ``sft``: :class:`~csrl.dialogue.config.SFTConfig`;
- ``env``: :class:`~csrl.env.EnvConfig`;
- ``ppo``: :class:`~csrl.dialogue.config.PPOConfig`;
- ``eval_episodes``: held-out episodes per policy in ``csrl eval``.

``TrainConfig.from_preset(name)`` applies one over the defaults:

>>> from csrl.dialogue.pipeline.config import TrainConfig
>>> TrainConfig.from_preset("debug").policy.n_layer
2
>>> preset_overrides("quick")["policy"]  # the defaults are the quick policy
{}
"""

from __future__ import annotations

from csrl.dialogue.config import SMOLLM2

# debug: seconds, for tests. Two intents only: the run must embed a few hundred KB documents, not thousands.
DEBUG = {
    "data": {"max_intents": 2, "max_conversations": 24},
    "reward": {"max_seq_length": 64},
    "reward_training": {
        "intent_max_examples": 600,
        "intent_epochs": 20,
        "satisfaction_contexts": 150,
        "satisfaction_max_examples": 600,
        "satisfaction_epochs": 10,
        "eval_max_turns": 60,
    },
    "policy": {"vocab_size": 512, "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 256, "max_new_tokens": 48},
    "sft": {
        "max_conversations": 50,
        "max_steps": 8,
        "per_device_train_batch_size": 8,
        "max_length": 256,
        "logging_steps": 2,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
    },
    "env": {},
    "ppo": {"rollout_batch_size": 2, "turns_per_episode": 2, "total_iterations": 2, "minibatch_size": 2,
            "update_epochs": 1},
    "eval_episodes": 8,
}  # fmt: skip

# quick: minutes on a laptop CPU; the reward models and the policy are the dataclass defaults.
QUICK = {
    "data": {},
    "reward": {},
    "reward_training": {},
    "policy": {},
    "sft": {"max_conversations": 600, "max_steps": 300, "max_length": 256},
    "env": {},
    # 64 turns a rollout (the default 16 episodes × 4 turns): with 32, the iteration's reward moved 0.13-0.36
    # with the conversations drawn, and seeds ended anywhere from 0.19 to 0.29 held-out (SFT: 0.23)
    "ppo": {"turns_per_episode": 4, "total_iterations": 16, "minibatch_size": 16, "update_epochs": 4,
            "learning_rate": 5e-5},
    "eval_episodes": 400,
}  # fmt: skip

# pretrained: SmolLM2-135M-Instruct with LoRA, sized for 2 CPU cores (~115 training and ~40 generated tokens/s
# there). The reward models are quick's. Short prompts (the newest ~190 tokens: the last turns), a short SFT (an
# instruct model learns the process format in ~100 steps), small PPO batches.
PRETRAINED = {
    "data": {},
    "reward": {},
    "reward_training": {},
    "policy": {"model": SMOLLM2, "n_positions": 384, "max_new_tokens": 48, "results_char_budget": 360,
               "stop_on_repetition": True, "constrain_intent": True},
    "sft": {"max_conversations": 600, "max_steps": 200, "per_device_train_batch_size": 4, "max_length": 240,
            "learning_rate": 3e-4},
    "env": {},
    "ppo": {"rollout_batch_size": 8, "turns_per_episode": 3, "total_iterations": 8, "learning_rate": 1e-4},
    "eval_episodes": 200,
}  # fmt: skip

# full: every conversation, the pretrained policy with longer prompts and long PPO (sized for a GPU).
FULL = {
    "data": {},
    "reward": {},
    "reward_training": {
        "intent_max_examples": 40000,
        "satisfaction_contexts": None,
        "satisfaction_max_examples": 40000,
        "eval_max_turns": 2000,
    },
    "policy": {"model": SMOLLM2, "n_positions": 1024, "stop_on_repetition": True, "constrain_intent": True},
    "sft": {"num_train_epochs": 2.0, "max_length": 768, "learning_rate": 2e-4},
    "env": {},
    "ppo": {"rollout_batch_size": 64, "turns_per_episode": 10, "total_iterations": 500, "minibatch_size": 32,
            "update_epochs": 4, "learning_rate": 5e-5},
    "eval_episodes": 500,
}  # fmt: skip

_BY_NAME = {"debug": DEBUG, "quick": QUICK, "pretrained": PRETRAINED, "full": FULL}
PRESETS = tuple(_BY_NAME)  # ("debug", "quick", "pretrained", "full"): the names, smallest first
DEFAULT_PRESET = "quick"


def preset_overrides(name: str) -> dict:
    """The dict of preset ``name`` (its overrides of the config defaults); an unknown name is a ``ValueError``.

    >>> preset_overrides("debug")["eval_episodes"]
    8
    """
    if name not in _BY_NAME:
        raise ValueError(f"preset={name!r}: expected one of {', '.join(PRESETS)}")
    return _BY_NAME[name]


__all__ = ["DEBUG", "DEFAULT_PRESET", "FULL", "PRESETS", "QUICK", "preset_overrides"]
