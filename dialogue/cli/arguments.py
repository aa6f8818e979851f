"""The options of each ``csrl`` subcommand: one dataclass a subcommand (its docstring is the subcommand's help).

An option that is a config field takes its default and help from that field (:func:`config_field`), so a
setting is typed once; choices come from the shared constants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from csrl.dialogue.config import PolicyConfig, PPOConfig
from csrl.dialogue.pipeline.config import DataConfig, TrainConfig
from csrl.dialogue.pipeline.presets import DEFAULT_PRESET, PRESETS
from csrl.dialogue.pipeline.runs import POLICIES
from csrl.dialogue.serving.reply import METHODS, Decoding
from csrl.dialogue.serving.server import DEFAULT_MAX_BODY_BYTES
from csrl.dialogue.trainer.credit import CREDITS
from csrl.env import EnvConfig, ReactiveCustomer, ReplayCustomer
from csrl.rewards.config import NEED_EMBEDDINGS, RewardConfig

SIMULATORS = (ReplayCustomer.name, ReactiveCustomer.name)


def config_field(config_class: type, name: str, *, default: Any = dataclasses.MISSING, note: str = "", **metadata):
    """A field of an arguments dataclass with the default and help of ``config_class``'s field ``name``.

    Args:
        config_class: a config dataclass, e.g. :class:`~csrl.dialogue.pipeline.config.DataConfig`.
        name: its field.
        default: replaces the config's default (``None``: the option was not given, and something else decides).
        note: added to the help in parentheses, e.g. what an unset option means.
        **metadata: further ``add_argument`` keywords, e.g. ``choices``.

    >>> config_field(DataConfig, "seed").default, config_field(DataConfig, "seed").metadata["help"]
    (0, 'split seed (splits are by conversation)')
    """
    source = {f.name: f for f in dataclasses.fields(config_class)}.get(name)
    if source is None:
        raise ValueError(f"{config_class.__name__} has no field {name!r}")
    default = source.default if default is dataclasses.MISSING else default
    if default is dataclasses.MISSING:
        raise ValueError(f"{config_class.__name__}.{name} has no plain default: pass default=")
    help_text = source.metadata.get("help", "") + (f" ({note})" if note else "")
    return field(default=default, metadata={**source.metadata, "help": help_text, **metadata})


# -- the arguments of each subcommand -------------------------------------------------------------


@dataclass(kw_only=True)  # keyword-only: subclasses may add required fields (a positional path) after these
class MappingArguments:
    """How a CSV export's columns and role values map to csrl's (every command that reads logs)."""

    columns: str | None = config_field(DataConfig, "columns")
    roles: str | None = config_field(DataConfig, "roles")
    mapping: str | None = config_field(DataConfig, "mapping")

    def column_mapping(self):
        """The :class:`~csrl.data.mapping.ColumnMapping` given (None: the canonical columns and roles)."""
        return DataConfig(columns=self.columns, roles=self.roles, mapping=self.mapping).column_mapping()


@dataclass
class DataStatsArguments(MappingArguments):
    """Count conversations, turns, intents, KB documents and splits."""

    data: str = config_field(DataConfig, "source")
    kb: str | None = config_field(DataConfig, "kb")
    seed: int = config_field(DataConfig, "seed")
    skip_invalid: bool = field(default=False, metadata={"help": "skip and count invalid records"})
    json: bool = field(default=False, metadata={"help": "print one JSON object"})


@dataclass
class DataValidateArguments(MappingArguments):
    """Check a logs file; name the file, line and field of each problem."""

    path: str = field(metadata={"help": "a .jsonl or .csv file of logs (or a KB with --kb)", "positional": True})
    kb: bool = field(default=False, metadata={"help": "the file is a knowledge base, not logs"})
    skip_invalid: bool = field(default=False, metadata={"help": "report problems but exit 0"})


@dataclass
class DataIngestArguments(MappingArguments):
    """Validate logs once into an on-disk Arrow folder that csrl reads memory-mapped (--data FOLDER)."""

    path: str = field(
        metadata={"help": "a .jsonl or .csv file of logs ('star': the embedded corpus)", "positional": True}
    )
    out: str = field(metadata={"help": "the folder to write (must not exist)"})
    seed: int = config_field(DataConfig, "seed")
    skip_invalid: bool = field(default=False, metadata={"help": "leave invalid records out (and count them)"})


@dataclass
class TrainArguments(MappingArguments):
    """Train reward models, SFT and PPO on chat logs (stages cached)."""

    data: str = config_field(DataConfig, "source")
    kb: str | None = config_field(DataConfig, "kb")
    intents: str | None = config_field(DataConfig, "intents")
    max_discovered_intents: int = config_field(DataConfig, "max_discovered_intents")
    # None, not the default preset: `--resume` without `--preset` continues the run as it was configured
    preset: str | None = config_field(
        TrainConfig, "preset", default=None, choices=PRESETS, note=f"default {DEFAULT_PRESET}; with --resume: the run's"
    )
    credit: str | None = config_field(
        PPOConfig, "credit", default=None, choices=CREDITS, note=f"default {PPOConfig().credit}"
    )
    model: str | None = config_field(PolicyConfig, "model", default=None, note="default: the preset's")
    need_embedding: str | None = config_field(
        RewardConfig, "need_embedding", default=None, choices=NEED_EMBEDDINGS, note="default: the preset's"
    )
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/PRESET, runs/PRESET-CREDIT)"})
    seed: int = config_field(DataConfig, "seed")
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its last checkpoint"})
    ppo_iterations: int | None = config_field(PPOConfig, "total_iterations", default=None, note="default: the preset's")
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


@dataclass
class IntentsDiscoverArguments(MappingArguments):
    """Discover the intents of logs without intent labels; write an editable intents.json."""

    data: str = field(
        metadata={"help": "chat logs (.jsonl, or a .csv of turns) or a list of customer messages "
                          "(a .csv with id,text columns, or a .txt file with a message a line)"}
    )  # fmt: skip
    out: str = field(default="intents.json", metadata={"help": "the intents file to write (edit it, train with it)"})
    assignments: str | None = field(
        default=None, metadata={"help": "also write conversation_id,intent (id,intent for messages) to this CSV"}
    )
    max_intents: int = config_field(DataConfig, "max_discovered_intents")
    seed: int = config_field(DataConfig, "seed")


@dataclass
class RunArguments:
    """The options of every command that opens a trained run."""

    run: str = field(metadata={"help": "a run folder written by csrl train"})


@dataclass
class EvalArguments(RunArguments):
    """Held-out metrics of a run's reward models and policies."""

    episodes: int | None = config_field(TrainConfig, "eval_episodes", default=None, note="default: the run's config")
    seed: int = field(default=0, metadata={"help": "episode seed (every policy plays the same ones)"})
    decoding: str = field(
        default="both",
        metadata={"help": "the policies' decoding: 'greedy' (a deployed bot), 'sampled' (what PPO explores) or both",
                  "choices": ("both", "greedy", "sampled")},
    )  # fmt: skip
    json: bool = field(default=False, metadata={"help": "one JSON object on stdout (progress still goes to stderr)"})
    quiet: bool = field(default=False, metadata={"help": "no progress on stderr"})


@dataclass
class SimulateArguments(RunArguments):
    """Run a policy against simulated customers; transcripts and report."""

    episodes: int = field(default=50, metadata={"help": "conversations to simulate"})
    simulator: str = config_field(EnvConfig, "simulator", choices=SIMULATORS)
    policy: str = field(
        default="ppo", metadata={"help": "who plays the agent ('human': the logged turns)", "choices": POLICIES}
    )
    seed: int = field(default=0, metadata={"help": "episode seed"})
    out: str | None = field(
        default=None, metadata={"help": "transcripts JSONL (default RUN/simulate-POLICY-SIMULATOR.jsonl)"}
    )
    report: str | None = field(default=None, metadata={"help": "write an HTML report with plots here"})


@dataclass
class ScoreArguments(RunArguments):
    """Score any bot's turns from a JSONL file."""

    input: str = field(metadata={"help": "JSONL: {history, reply, intent?, knowledge?, id?} per line"})
    out: str | None = field(default=None, metadata={"help": "JSONL of results (default stdout)"})


@dataclass
class ServeArguments(RunArguments):
    """The reward and the policy over HTTP: POST /v1/score, POST /v1/reply, a chat page at /."""

    host: str = field(default="127.0.0.1", metadata={"help": "bind address (127.0.0.1: loopback only)"})
    port: int = field(default=8000, metadata={"help": "port"})
    token: str | None = field(
        default=None, metadata={"help": "require 'Authorization: Bearer TOKEN' (or set CSRL_TOKEN)"}
    )
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata={"help": "largest request body accepted"})
    policy: str = field(
        default="ppo",
        metadata={"help": "the policy answering POST /v1/reply and the chat page at / ('none': score only)",
                  "choices": ("ppo", "sft", "none")},
    )  # fmt: skip
    workers: int = field(
        default=1,
        metadata={"help": "server processes, each with the run loaded and an equal share of the cores (requests "
                          "are spread over them by the kernel)"},
    )  # fmt: skip


@dataclass
class ExportArguments(RunArguments):
    """Write a trained policy as one plain transformers folder (adapters merged) for serving engines."""

    out: str = field(metadata={"help": "the folder to write (must not exist)"})
    policy: str = field(default="ppo", metadata={"help": "which policy", "choices": ("ppo", "sft")})


@dataclass
class DecodingArguments:
    """How the policy chooses its turn (:class:`~csrl.dialogue.serving.reply.Decoding`)."""

    decoding: str = field(
        default="greedy",
        metadata={"help": "greedy, sampled, best_of_n (n candidate turns, the best-scored kept) or beam (a step-level "
                          "beam over intent -> search -> reply)", "choices": METHODS},
    )  # fmt: skip
    n: int = config_field(Decoding, "n")
    beam_width: int = config_field(Decoding, "beam_width")
    temperature: float = config_field(Decoding, "temperature")

    def to_decoding(self) -> Decoding:
        """The :class:`~csrl.dialogue.serving.reply.Decoding` these options name."""
        return Decoding(self.decoding, n=self.n, beam_width=self.beam_width, temperature=self.temperature)


@dataclass
class ChatArguments(DecodingArguments, RunArguments):
    """Talk to a run's policy in the terminal (you are the customer); each turn's process and scores shown."""

    policy: str = field(default="ppo", metadata={"help": "which policy", "choices": ("ppo", "sft")})
