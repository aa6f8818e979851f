"""LoRA adapters on the policy's LM (``peft``), the frozen reference as the adapter switched off, and the dtype.

The recipe of TRL's PPO with ``peft`` and of the StackLLaMA example: supervised fine-tuning trains an adapter; PPO
starts from the SFT model with that adapter *merged* into the base weights and trains a fresh one, so the frozen
reference (the SFT policy) is the same model with the adapter disabled -- no second copy of the weights in memory.

- The adapters sit on every linear layer of the transformer blocks (peft's ``"all-linear"``: attention and MLP
  projections), never on the (tied) embeddings or the output layer.
- No LoRA dropout: PPO's ratio must be exactly 1 before the first update.
- An adapter merged into the base is kept as a snapshot (config and weights, a few MB), so a saved policy can be
  rebuilt from the base model alone: base -> merge each snapshot in order -> load the live adapter.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from csrl.rewards.encoder import resolve_precision

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def add_adapter(lm, r: int, alpha: int):
    """``lm`` wrapped as a ``peft`` ``PeftModel`` with a fresh LoRA adapter (B = 0: the model is unchanged)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(lm, config)


def is_adapted(lm) -> bool:
    """Whether ``lm`` carries a LoRA adapter (a ``PeftModel``)."""
    return hasattr(lm, "peft_config") and hasattr(lm, "disable_adapter")


@dataclass
class AdapterSnapshot:
    """An adapter's config and weights, on the CPU: enough to merge it into the same base again."""

    config: object
    weights: dict[str, torch.Tensor]

    @classmethod
    def of(cls, lm) -> AdapterSnapshot:
        """The active adapter of a ``PeftModel``."""
        from peft import get_peft_model_state_dict

        weights = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(lm).items()}
        return cls(copy.deepcopy(lm.peft_config[lm.active_adapter]), weights)

    @classmethod
    def read(cls, folder: str | Path) -> AdapterSnapshot:
        """An adapter folder written by :meth:`write` or ``PeftModel.save_pretrained``."""
        from peft import LoraConfig
        from safetensors.torch import load_file

        return cls(LoraConfig.from_pretrained(str(folder)), load_file(Path(folder) / ADAPTER_WEIGHTS))

    def write(self, folder: str | Path) -> Path:
        """``adapter_config.json`` and ``adapter_model.safetensors``, the layout ``PeftModel.from_pretrained`` reads."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        save_file({k: v.contiguous() for k, v in self.weights.items()}, folder / ADAPTER_WEIGHTS)
        return folder

    def merge_into(self, base):
        """``base`` with this adapter merged into its weights (a plain transformers model again)."""
        from peft import get_peft_model, set_peft_model_state_dict

        config = copy.deepcopy(self.config)
        config.inference_mode = True
        model = get_peft_model(base, config)
        set_peft_model_state_dict(model, self.weights)
        return model.merge_and_unload()


class AdapterDisabled:
    """The policy with its LoRA adapter switched off, for the PPO reference's log-probs (the weights are shared).

    Has what :func:`~csrl.dialogue.trainer.rollout.score_tokens` uses of a policy: ``tokenizer``, ``device``,
    ``encode``, ``evaluate`` and ``eval``.
    """

    def __init__(self, policy):
        self.policy = policy

    @property
    def tokenizer(self):
        """The policy's tokenizer."""
        return self.policy.tokenizer

    @property
    def device(self):
        """The policy's device."""
        return self.policy.device

    def eval(self) -> AdapterDisabled:
        """Nothing to switch: the reference is only ever evaluated."""
        return self

    def encode(self, *args, **kwargs):
        """The policy's :meth:`~csrl.dialogue.models.policy.ActorCritic.encode`."""
        return self.policy.encode(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        """The policy's :meth:`~csrl.dialogue.models.policy.ActorCritic.evaluate` with the adapter disabled."""
        with self.policy.lm.disable_adapter():
            return self.policy.evaluate(*args, **kwargs)


def resolve_dtype(name: str) -> torch.dtype:
    """``"auto"`` (bfloat16 where the GPU or CPU computes it natively, else float32), ``"float32"`` or ``"bfloat16"``.

    The rule is the encoder's (:func:`csrl.rewards.encoder.resolve_precision`), so both stages agree on a machine.

    >>> resolve_dtype("float32")
    torch.float32
    """
    return getattr(torch, resolve_precision(name, "cuda" if torch.cuda.is_available() else "cpu"))


__all__ = ["AdapterDisabled", "AdapterSnapshot", "add_adapter", "is_adapted", "resolve_dtype"]
