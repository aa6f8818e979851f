"""The configuration of a training run: ``TrainConfig`` composes the packages' own configs.

``config.json`` in the run folder records it (:func:`save_config` / :func:`load_config`); the named
sizes are in :mod:`csrl.dialogue.pipeline.presets`.

>>> config = TrainConfig.from_preset("debug", credit="turn")
>>> config.ppo.credit, config.data.max_intents
('turn', 2)
>>> TrainConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from csrl.data.files import write_text_atomic
from csrl.dialogue.config import PolicyConfig, PPOConfig, SFTConfig
from csrl.dialogue.pipeline.presets import DEFAULT_PRESET, PRESETS, preset_overrides
from csrl.env import EnvConfig
from csrl.rewards.config import RewardConfig, RewardTrainingConfig

CONFIG_FILE = "config.json"


@dataclass
class DataConfig:
    """Which logs to train on, and how much of them."""

    source: str = field(default="star", metadata={"help": "'star' (embedded) or a .jsonl / .csv file of logs"})
    kb: str | None = field(
        default=None,
        metadata={"help": "a knowledge base: JSON Lines, CSV (id,title,text) or a folder of Markdown / text files "
                          "(default: STAR's; the logs' looked-up documents; else built from the agents' answers)"},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "split seed (splits are by conversation)"})
    max_intents: int | None = field(
        default=None, metadata={"help": "keep only the most frequent intents (debug runs); None: all"}
    )
    max_conversations: int | None = field(
        default=None, metadata={"help": "keep at most this many conversations per split; None: all"}
    )
    columns: str | None = field(
        default=None,
        metadata={"help": "the CSV's column names, e.g. 'conversation_id=ticket_id,role=author,text=body,"
                          "timestamp=created_at' (rows are ordered by the timestamp where one is mapped)"},
    )  # fmt: skip
    roles: str | None = field(
        default=None, metadata={"help": "the CSV's role values, e.g. 'customer=end-user,agent=support'"}
    )
    mapping: str | None = field(
        default=None, metadata={"help": 'a JSON file {"columns": {...}, "roles": {...}} instead of --columns/--roles'}
    )
    intents: str | None = field(
        default=None,
        metadata={"help": "an intents.json (from `csrl intents discover`, edited, or names and descriptions only) "
                          "that labels the conversations the logs leave unlabelled"},
    )  # fmt: skip
    max_discovered_intents: int = field(
        default=50, metadata={"help": "most intents discovery may find in logs without intent labels"}
    )

    def column_mapping(self):
        """The :class:`~csrl.data.mapping.ColumnMapping` of ``columns`` / ``roles`` / ``mapping`` (None: none given)."""
        from csrl.data import ColumnMapping

        if self.mapping is not None:
            return ColumnMapping.from_file(self.mapping)
        if self.columns or self.roles:
            return ColumnMapping.from_strings(self.columns, self.roles)
        return None

    def __post_init__(self):
        for name in ("max_intents", "max_conversations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value}: use None (all) or a positive number")
        if self.mapping is not None and (self.columns or self.roles):
            raise ValueError(f"mapping={self.mapping!r} and columns/roles both given: use the file or the options")
        if self.columns or self.roles:
            self.column_mapping()  # a mistyped mapping fails here, before any work
        if self.max_discovered_intents < 2:
            raise ValueError(f"max_discovered_intents={self.max_discovered_intents}: discovery needs at least 2")


@dataclass
class TrainConfig:
    """Everything a run needs; ``TrainConfig.from_preset(name)`` gives the ``debug`` / ``quick`` / ``full`` sizes."""

    preset: str = field(
        default=DEFAULT_PRESET,
        metadata={
            "help": "run size: 'debug' (seconds, for tests), 'quick' (minutes on a laptop CPU; both a small GPT-2 "
            "from scratch), 'pretrained' (SmolLM2 + LoRA on a CPU) or 'full' (a GPU)"
        },  # fmt: skip
    )
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_training: RewardTrainingConfig = field(default_factory=RewardTrainingConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    eval_episodes: int = field(default=200, metadata={"help": "held-out episodes per policy in `csrl eval`"})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r}: expected one of {', '.join(PRESETS)}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes={self.eval_episodes}: must be >= 1")

    @classmethod
    def from_preset(cls, name: str, *, data: DataConfig | None = None, credit: str | None = None) -> TrainConfig:
        """The named preset's overrides over the defaults.

        Args:
            name: one of :data:`~csrl.dialogue.pipeline.presets.PRESETS`.
            data: which logs; the fields it leaves at their defaults take the preset's (debug's sizes).
            credit: the PPO credit, if not the default.
        """
        values = dict(preset_overrides(name))
        defaults = dataclasses.asdict(DataConfig())
        chosen = {k: v for k, v in dataclasses.asdict(data).items() if v != defaults[k]} if data else {}
        values["data"] = {**values.get("data", {}), **chosen}
        if credit:
            values["ppo"] = {**values.get("ppo", {}), "credit": credit}
        return cls.from_dict({**values, "preset": name})

    def to_dict(self) -> dict:
        """JSON-ready nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys are an error, so a typo cannot pass silently).

        A part that is missing, or a field missing from a part, takes its default.
        """
        parts = {
            "data": DataConfig,
            "reward": RewardConfig,
            "reward_training": RewardTrainingConfig,
            "policy": PolicyConfig,
            "sft": SFTConfig,
            "env": EnvConfig,
            "ppo": PPOConfig,
        }
        unknown = sorted(set(values) - set(parts) - {"preset", "eval_episodes"})
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        kwargs = {name: parts[name](**values[name]) for name in parts if name in values}
        return cls(
            preset=values.get("preset", DEFAULT_PRESET), eval_episodes=values.get("eval_episodes", 200), **kwargs
        )


def save_config(config: TrainConfig, run: Path) -> None:
    """Write ``config.json`` (atomically: a crash never leaves half a config)."""
    write_text_atomic(run / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(run: str | Path) -> TrainConfig:
    """The config of a run folder."""
    path = Path(run) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a csrl run folder (no {CONFIG_FILE}); train one with `csrl train`")
    return TrainConfig.from_dict(json.loads(path.read_text()))


def resume_differences(saved: TrainConfig, config: TrainConfig) -> list[str]:
    """The config sections in which ``config`` differs from the run's ``saved`` one, but for the PPO length.

    A resumed run must keep every setting except ``ppo.total_iterations`` (a run may be continued for longer).

    >>> quick = TrainConfig.from_preset("quick")
    >>> resume_differences(quick, TrainConfig.from_preset("quick", credit="turn"))
    ['ppo']
    """

    def comparable(values: dict) -> dict:
        values["ppo"] = {k: v for k, v in values["ppo"].items() if k != "total_iterations"}
        return values

    before, now = comparable(saved.to_dict()), comparable(config.to_dict())
    return sorted(k for k, v in now.items() if before.get(k) != v)


__all__ = ["CONFIG_FILE", "DataConfig", "TrainConfig", "load_config", "resume_differences", "save_config"]
