"""How a user's CSV export maps onto turns: which column is which, which role values are customer or agent.

Exports differ (``ticket_id, author, body, created_at`` with ``end-user`` / ``support``). A
:class:`ColumnMapping` says so, built from the command-line strings, a small JSON file or code:

>>> mapping = ColumnMapping.from_strings("conversation_id=ticket_id,role=author,text=body,timestamp=created_at",
...                                      "customer=end-user,agent=support")
>>> mapping.columns["text"], mapping.role_of(" End-User "), mapping.role_of("support"), mapping.role_of("system")
('body', 'customer', 'agent', None)

Role values are compared after :func:`normalize_role` (case, surrounding spaces and ``_``/``-``/inner
spaces do not matter). Values given for a role replace that role's defaults (:data:`DEFAULT_ROLES`);
a role left out keeps its defaults. Rows whose role is neither customer nor agent (``system``,
``bot-note``) are skipped by the CSV loader and counted in its report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from csrl.data.reading import header_index

# canonical column -> what it holds; the first three are required in every CSV of turns
CANONICAL_COLUMNS = ("conversation_id", "role", "text", "intent", "rating", "timestamp")
REQUIRED_COLUMNS = CANONICAL_COLUMNS[:3]
MAPPED_ROLES = ("customer", "agent")  # tool turns cannot be written as CSV rows

# The people on each side in the exports we know: Zendesk (end-user / agent / admin), Freshdesk
# (requester), Intercom (user, lead, contact / admin, bot), Salesforce (EndUser / Agent, Chatbot),
# LLM chat logs (user / assistant), STAR (user / wizard). A bot answering for the company is the
# agent: that is the role the trained policy takes. Notes and system events map to neither.
DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "customer": (
        "customer", "user", "client", "end-user", "enduser", "requester", "visitor", "guest", "caller",
        "contact", "lead", "consumer", "buyer",
    ),
    "agent": (
        "agent", "assistant", "support", "wizard", "staff", "operator", "representative", "rep", "advisor",
        "admin", "helpdesk", "bot", "chatbot", "virtual-assistant",
    ),
}  # fmt: skip


def normalize_role(value: str) -> str:
    """The form role values are compared in: case-folded, stripped, runs of spaces, ``_`` and ``-`` as one ``-``.

    >>> [normalize_role(v) for v in (" End User", "end_user", "END-USER", "Virtual  Assistant")]
    ['end-user', 'end-user', 'end-user', 'virtual-assistant']
    """
    return re.sub(r"[\s_-]+", "-", value.strip().casefold())


def _pairs(spec: str, what: str, example: str) -> list[tuple[str, str]]:
    if not isinstance(spec, str):
        raise TypeError(f"{what} must be a string like {example!r}, got {type(spec).__name__}")
    pairs = []
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"cannot read {item.strip()!r} in {what} {spec!r}: expected NAME=VALUE, e.g. {example}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def parse_columns(spec: str, allowed: Iterable[str] = CANONICAL_COLUMNS) -> dict[str, str]:
    """Read ``"conversation_id=ticket_id,role=author"`` as {canonical column: the file's column}.

    >>> parse_columns("conversation_id=ticket_id, text=body")
    {'conversation_id': 'ticket_id', 'text': 'body'}
    >>> parse_columns("id=msg_id", allowed=("id", "text"))
    {'id': 'msg_id'}
    >>> parse_columns("speaker=author")
    Traceback (most recent call last):
    ...
    ValueError: unknown column 'speaker' in 'speaker=author': expected one of conversation_id, role, text, \
intent, rating, timestamp (the name on the left of '=' is csrl's, the one on the right is your file's)

    Raises:
        ValueError: a pair without ``=``, an unknown canonical name, or a name given twice.

    """
    allowed = tuple(allowed)
    columns: dict[str, str] = {}
    for key, value in _pairs(spec, "the column mapping", "conversation_id=ticket_id,role=author,text=body"):
        if key not in allowed:
            raise ValueError(
                f"unknown column {key!r} in {spec!r}: expected one of {', '.join(allowed)} "
                "(the name on the left of '=' is csrl's, the one on the right is your file's)"
            )
        if key in columns:
            raise ValueError(f"column {key!r} is mapped twice in {spec!r} ({columns[key]!r} and {value!r}): keep one")
        columns[key] = value
    return columns


def parse_roles(spec: str) -> dict[str, tuple[str, ...]]:
    """Read ``"customer=end-user,customer=client,agent=support"`` as {role: the file's values}.

    >>> parse_roles("customer=end-user, customer=Client ,agent=support")
    {'customer': ('end-user', 'client'), 'agent': ('support',)}
    >>> parse_roles("bot=assistant")
    Traceback (most recent call last):
    ...
    ValueError: unknown role 'bot' in 'bot=assistant': expected customer or agent on the left of '=' \
(e.g. customer=end-user,agent=support)

    Raises:
        ValueError: a pair without ``=``, a role other than customer or agent, or one value given to both.

    """
    roles: dict[str, list[str]] = {}
    for key, value in _pairs(spec, "the role mapping", "customer=end-user,agent=support"):
        if key.casefold() not in MAPPED_ROLES:
            raise ValueError(
                f"unknown role {key!r} in {spec!r}: expected customer or agent on the left of '=' "
                "(e.g. customer=end-user,agent=support)"
            )
        roles.setdefault(key.casefold(), []).append(normalize_role(value))
    _check_disjoint(roles)
    return {role: tuple(values) for role, values in roles.items()}


def _check_disjoint(roles: Mapping[str, Iterable[str]]) -> None:
    customer = set(roles.get("customer", ()))
    both = sorted(customer & set(roles.get("agent", ())))
    if both:
        raise ValueError(f"role value(s) {', '.join(map(repr, both))} given to both customer and agent: keep one side")


@dataclass(frozen=True)
class ColumnMapping:
    """Which column of a CSV export holds what, and which role values are the customer and the agent.

    >>> ColumnMapping(roles={"agent": ["Support"]}).roles["agent"]
    ('support',)
    >>> "user" in ColumnMapping().roles["customer"]
    True
    """

    columns: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"help": "canonical column (conversation_id, role, text, intent, rating, timestamp) -> the "
                          "file's column; unmapped columns are looked up under their canonical name"},
    )  # fmt: skip
    roles: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata={"help": "customer / agent -> the file's role values; a role left out keeps DEFAULT_ROLES"},
    )
    merge_bursts: bool = field(
        default=True, metadata={"help": "join a speaker's consecutive messages into one turn (CSV logs)"}
    )

    def __post_init__(self):
        if not isinstance(self.columns, Mapping) or not isinstance(self.roles, Mapping):
            raise TypeError("columns and roles must be mappings, e.g. {'text': 'body'} and {'agent': ['support']}")
        unknown = [c for c in self.columns if c not in CANONICAL_COLUMNS]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown column(s) {names}: expected {', '.join(CANONICAL_COLUMNS)}")
        bad = [c for c, v in self.columns.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(f"column(s) {', '.join(bad)} mapped to no column name: name the file's, e.g. text=body")
        given: dict[str, tuple[str, ...]] = {}
        for role, values in self.roles.items():
            if role not in MAPPED_ROLES:
                raise ValueError(f"unknown role {role!r}: expected customer or agent")
            values = (values,) if isinstance(values, str) else tuple(values)
            if not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise ValueError(f"role {role!r} needs non-empty text values, e.g. {role}=end-user")
            given[role] = tuple(dict.fromkeys(normalize_role(v) for v in values))
        _check_disjoint(given)
        claimed = {v for values in given.values() for v in values}
        roles = {
            role: given.get(role, tuple(v for v in DEFAULT_ROLES[role] if v not in claimed)) for role in MAPPED_ROLES
        }
        object.__setattr__(self, "columns", {c: v.strip() for c, v in self.columns.items()})
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "_role_of", {v: role for role, values in roles.items() for v in values})

    @classmethod
    def from_strings(
        cls, columns: str | None = None, roles: str | None = None, *, merge_bursts: bool = True
    ) -> ColumnMapping:
        """The mapping the command line gives: ``--columns`` and ``--roles`` (see :func:`parse_columns`)."""
        return cls(
            columns=parse_columns(columns) if columns else {},
            roles=parse_roles(roles) if roles else {},
            merge_bursts=merge_bursts,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ColumnMapping:
        """Read ``{"columns": {...}, "roles": {"customer": [...], ...}, "merge_bursts": true}`` (every key optional)."""
        return read_mapping(path)

    def role_of(self, value: str) -> str | None:
        """``customer`` or ``agent`` for a role value of the file, ``None`` for one of neither."""
        return self._role_of.get(normalize_role(value))

    def resolve(self, fieldnames: list[str] | None, source: str = "") -> dict[str, str]:
        """The file's column for each canonical column present: mapped ones must exist, required ones too.

        Header names match whatever their case and surrounding spaces.

        >>> ColumnMapping({"text": "Body"}).resolve(["conversation_id", "role", "body", "intent"])
        {'conversation_id': 'conversation_id', 'role': 'role', 'text': 'body', 'intent': 'intent'}

        Raises:
            ValueError: a mapped column not in the header, or a required column neither mapped nor present;
                the message names the column, the header and the fix.

        """
        resolved = resolve_columns(fieldnames, self.columns, CANONICAL_COLUMNS, source)
        header = ", ".join(name for name in fieldnames or [] if name is not None) or "(empty)"
        where = f"{source}:1: " if source else ""
        missing = [c for c in REQUIRED_COLUMNS if c not in resolved]
        if missing:
            raise ValueError(
                f"{where}CSV header lacks column(s) {', '.join(missing)}; expected "
                f"{', '.join(REQUIRED_COLUMNS)}[, {', '.join(CANONICAL_COLUMNS[3:])}], got {header}; or map yours, "
                "e.g. --columns conversation_id=ticket_id,role=author,text=body"
            )
        return resolved


def resolve_columns(
    fieldnames: list[str] | None, columns: Mapping[str, str], canonical: Iterable[str], source: str = ""
) -> dict[str, str]:
    """The file's column for each ``canonical`` column present (``columns`` maps some to other names).

    A mapped column must be in the header; header names match whatever their case and surrounding spaces.

    >>> resolve_columns(["ID", " body "], {"text": "body"}, ("id", "text"))
    {'id': 'ID', 'text': ' body '}
    """
    index = header_index(fieldnames)
    header = ", ".join(name for name in fieldnames or [] if name is not None) or "(empty)"
    where = f"{source}:1: " if source else ""
    resolved: dict[str, str] = {}
    for name in canonical:
        wanted = columns.get(name)
        found = index.get((wanted or name).strip().casefold())
        if wanted and found is None:
            raise ValueError(
                f"{where}column {wanted!r} (mapped to {name}) is not in the header: {header}; "
                f"fix the mapping, e.g. {name}=<one of those columns>"
            )
        if found is not None:
            resolved[name] = found
    return resolved


def read_mapping(path: str | Path) -> ColumnMapping:
    """A :class:`ColumnMapping` from a JSON file ``{"columns": {...}, "roles": {...}, "merge_bursts": bool}``.

    Role values may be one string or a list: ``{"roles": {"customer": ["end-user", "client"]}}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an object, an unknown key, or a bad column / role (as :class:`ColumnMapping`).

    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such mapping file: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON mapping file ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f'{path}: expected a JSON object {{"columns": {{...}}, "roles": {{...}}}}')
    unknown = sorted(set(config) - {"columns", "roles", "merge_bursts"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}: expected columns, roles, merge_bursts")
    merge_bursts = config.get("merge_bursts", True)
    if not isinstance(merge_bursts, bool):
        raise ValueError(f"{path}: merge_bursts must be true or false, got {merge_bursts!r}")
    try:
        return ColumnMapping(config.get("columns", {}), config.get("roles", {}), merge_bursts)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def parse_timestamp(value: str) -> float:
    """Seconds since 1970 (UTC) from ISO 8601 or Unix time; a zone-less ISO time is read as UTC.

    Unix numbers of 12 digits or more before the point are milliseconds (seconds would be past the year 5000).

    >>> parse_timestamp("2024-05-01T13:45:00Z"), parse_timestamp("2024-05-01 15:45:00+02:00")
    (1714571100.0, 1714571100.0)
    >>> parse_timestamp("1714571100"), parse_timestamp("1714571100500"), parse_timestamp("2024-05-01")
    (1714571100.0, 1714571100.5, 1714521600.0)
    >>> parse_timestamp("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: cannot read 'yesterday' as a time: expected ISO 8601 (2024-05-01T13:45:00Z) or Unix seconds

    Raises:
        ValueError: neither form.

    """
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
        number = float(text)
        return number / 1000 if len(text.lstrip("+-").split(".")[0]) >= 12 else number
    try:
        moment = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
    except ValueError:
        raise ValueError(
            f"cannot read {value!r} as a time: expected ISO 8601 (2024-05-01T13:45:00Z) or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
