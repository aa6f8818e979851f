r"""The trajectory buffer: one record per agent turn, written to Parquet through ``datasets`` each iteration.

>>> buffer = TrajectoryBuffer()
>>> record = buffer.add(TurnRecord(episode_id=0, turn_index=0, state="customer: Hi\nagent:\n",
...     action="intent: greet\nreply: Hello", reward=0.4, stage_rewards={"intent": 0.3, "retrieval": 0.0},
...     done=True, query_ids=[5, 6], response_ids=[7, 8, 2], action_mask=[1, 1, 1],
...     logprobs=[-0.1, -0.2, -0.3], values=[0.1, 0.2, 0.3]))
>>> len(buffer), buffer.episodes()[0][0].reward
(1, 0.4)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

_TOKEN_FIELDS = ("response_ids", "action_mask", "logprobs", "values", "ref_logprobs", "token_rewards")
_OPTIONAL_TOKEN_FIELDS = ("ref_logprobs", "token_rewards")  # may be left empty


@dataclass
class TurnRecord:
    """One agent turn of a rollout: (state, action, reward) and what the PPO update needs.

    Attributes:
        episode_id: the rollout's episode (unique within the buffer).
        turn_index: the turn's position in its episode (0, 1, ...).
        state: the prompt text the policy saw.
        action: the turn text (the policy's tokens and the inserted results block).
        reward: the composite reward of the turn.
        stage_rewards: the per-stage breakdown, e.g. ``{"intent": .3, "retrieval": .5, "satisfaction": .2}``.
        done: the episode terminated after this turn (not set on truncation).
        truncated: the episode was cut by the turn limit after this turn.
        query_ids: the prompt's token ids.
        response_ids: the turn's token ids, results block included.
        action_mask: 1 for tokens the policy wrote, 0 for the environment's results tokens.
        logprobs: per ``response_ids`` token, log π_old at sampling time (0 where not an action).
        values: per ``response_ids`` token, V_old of the state that chose it.
        ref_logprobs: per token, log π_ref of the frozen reference (empty when not computed).
        stage_token_index: stage name -> index in ``response_ids`` of the stage's last token
            (where process credit places that stage's reward).
        components: each reward component's raw score (``stage_rewards`` holds the weighted ones).
        token_rewards: per ``response_ids`` token, the stage rewards placed on it by the run's credit
            choice (``csrl.dialogue.trainer.credit.place_rewards``); empty when not computed.
        bootstrap_value: V of the state after the turn when the episode was truncated there (else 0).
    """

    episode_id: int
    turn_index: int
    state: str
    action: str
    reward: float
    stage_rewards: dict[str, float] = field(default_factory=dict)
    done: bool = False
    truncated: bool = False
    query_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    ref_logprobs: list[float] = field(default_factory=list)
    stage_token_index: dict[str, int] = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)
    token_rewards: list[float] = field(default_factory=list)
    bootstrap_value: float = 0.0

    def __post_init__(self):
        n = len(self.response_ids)
        for name in _TOKEN_FIELDS[1:]:
            length = len(getattr(self, name))
            if length != n and not (name in _OPTIONAL_TOKEN_FIELDS and length == 0):
                raise ValueError(
                    f"{name} has {length} entries but response_ids has {n}: give one per response token"
                    + (f" (or none for {name})" if name in _OPTIONAL_TOKEN_FIELDS else "")
                )
        for stage, index in self.stage_token_index.items():
            if not 0 <= index < max(n, 1):
                raise ValueError(f"stage_token_index[{stage!r}]={index} is outside response_ids (length {n})")
        if self.done and self.truncated:
            raise ValueError("a turn is either done (terminated) or truncated, not both: truncation bootstraps")


def _features():
    from datasets import Features, Sequence, Value

    return Features(
        {
            "episode_id": Value("int64"),
            "turn_index": Value("int64"),
            "state": Value("string"),
            "action": Value("string"),
            "reward": Value("float64"),
            "stage_names": Sequence(Value("string")),
            "stage_values": Sequence(Value("float64")),
            "done": Value("bool"),
            "truncated": Value("bool"),
            "query_ids": Sequence(Value("int64")),
            "response_ids": Sequence(Value("int64")),
            "action_mask": Sequence(Value("int8")),
            "logprobs": Sequence(Value("float64")),
            "values": Sequence(Value("float64")),
            "ref_logprobs": Sequence(Value("float64")),
            "stage_token_names": Sequence(Value("string")),
            "stage_token_positions": Sequence(Value("int64")),
            "component_names": Sequence(Value("string")),
            "component_values": Sequence(Value("float64")),
            "token_rewards": Sequence(Value("float64")),
            "bootstrap_value": Value("float64"),
        }
    )


class TrajectoryBuffer:
    """Per-turn records of a rollout, savable to and loadable from Parquet exactly."""

    def __init__(self, records: list[TurnRecord] | None = None):
        self.records: list[TurnRecord] = []
        for record in records or []:
            self.add(record)

    def add(self, record: TurnRecord | None = None, **fields_) -> TurnRecord:
        """Append a record (or build one from keyword fields); returns it."""
        if record is None:
            record = TurnRecord(**fields_)
        elif fields_:
            raise TypeError("pass either a TurnRecord or keyword fields, not both")
        if not isinstance(record, TurnRecord):
            raise TypeError(f"expected a TurnRecord, got {type(record).__name__}")
        self.records.append(record)
        return record

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[TurnRecord]:
        return iter(self.records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrajectoryBuffer) and self.records == other.records

    def episodes(self) -> list[list[TurnRecord]]:
        """Records grouped by episode (first-seen order), each sorted by turn index."""
        grouped: dict[int, list[TurnRecord]] = {}
        for record in self.records:
            grouped.setdefault(record.episode_id, []).append(record)
        return [sorted(turns, key=lambda r: r.turn_index) for turns in grouped.values()]

    def to_dataset(self):
        """The records as a ``datasets.Dataset`` (dicts flattened to parallel name/value lists)."""
        from datasets import Dataset

        rows = []
        for record in self.records:
            row = asdict(record)
            stages = row.pop("stage_rewards")
            positions = row.pop("stage_token_index")
            components = row.pop("components")
            row.update(
                component_names=list(components),
                component_values=[float(v) for v in components.values()],
                stage_names=list(stages),
                stage_values=[float(v) for v in stages.values()],
                stage_token_names=list(positions),
                stage_token_positions=list(positions.values()),
            )
            rows.append(row)
        features = _features()
        if not rows:
            return Dataset.from_dict({name: [] for name in features}, features=features)
        return Dataset.from_list(rows, features=features)

    def save(self, path: str | Path) -> Path:
        """Write the buffer to a Parquet file at ``path`` (parents created); returns the path."""
        from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shown = is_progress_bar_enabled()
        disable_progress_bars()  # one bar per iteration would drown the training log
        try:
            self.to_dataset().to_parquet(str(path))
        finally:
            if shown:
                enable_progress_bars()
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrajectoryBuffer:
        """Read a buffer written by :meth:`save`."""
        import pyarrow.parquet as pq
        from datasets import Dataset

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no trajectory buffer here (write one with TrajectoryBuffer.save)")
        # read the table directly: Dataset.from_parquet would copy it into the datasets cache first
        dataset = Dataset(pq.read_table(path))  # the file's schema carries the features written by save
        names = {f.name for f in fields(TurnRecord)}
        records = []
        for row in dataset:
            row = dict(row)
            row["stage_rewards"] = dict(zip(row.pop("stage_names"), row.pop("stage_values"), strict=True))
            row["stage_token_index"] = dict(
                zip(row.pop("stage_token_names"), row.pop("stage_token_positions"), strict=True)
            )
            # buffers written before these fields existed load with their defaults
            names_, values_ = row.pop("component_names", None) or [], row.pop("component_values", None) or []
            row["components"] = dict(zip(names_, values_, strict=True))
            records.append(TurnRecord(**{k: v for k, v in row.items() if k in names}))
        return cls(records)
