r"""The agent turn as a process, written as text, and the dialogue rendered as the policy sees it.

An agent turn is up to three steps::

    intent: bank_fraud_report
    search: report fraud on card for Sam Lee
    results: [1] bank fraud report procedure ...      <- inserted by the environment
    reply: Could I get your account number, please?

Generation pauses after the ``search:`` line; the environment runs the search and inserts the
``results:`` block (not the policy's tokens), then the policy writes ``reply:``. Parsing is total:
any string parses, and what was wrong is listed in ``ParsedTurn.problems``.

>>> turn = parse_agent_turn("intent: weather\nreply: It will be sunny.")
>>> turn.intent, turn.search, turn.reply, turn.well_formed
('weather', None, 'It will be sunny.', True)
>>> parse_agent_turn("@@ garbage").problems
('no reply: line', 'no intent: line', "ignored text: '@@ garbage'")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from csrl.data.schema import KBDocument, Turn

KEYS = ("intent", "search", "results", "reply")
ROLE_PREFIX = {"customer": "customer: ", "agent": "agent: ", "tool": "results: "}
AGENT_TURN_START = "agent:\n"  # the prompt ends with this; the policy writes the process after it

_KEY_LINE = re.compile(r"^\s*(intent|search|results|reply)\s*:\s?(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedTurn:
    """An agent turn read from the policy's text.

    Attributes:
        intent: the declared intent, or ``None``.
        search: the search query, or ``None`` when the turn did not search.
        reply: the text for the customer ("" when missing).
        problems: what was malformed, in a fixed order; empty for a well-formed turn.
    """

    intent: str | None
    search: str | None
    reply: str
    problems: tuple[str, ...] = ()

    @property
    def well_formed(self) -> bool:
        """True when nothing was missing, repeated or left over."""
        return not self.problems


def parse_agent_turn(text: str) -> ParsedTurn:
    """Read intent, search and reply from ``text``; never raises.

    A key's value runs until the next key line (so replies may span lines). The first of a
    repeated key wins. Text outside any key is reported and ignored; the ``results:`` block is
    the environment's and is ignored.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    values: dict[str, list[str]] = {}
    repeated, stray = [], []
    current: str | None = None
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match:
            current = match.group(1).lower()
            if current in values:
                repeated.append(current)
                current = f"_repeat_{current}"
            values.setdefault(current, []).append(match.group(2))
        elif current is not None:
            values[current].append(line)
        elif line.strip():
            stray.append(line.strip())

    def value(key: str) -> str | None:
        joined = "\n".join(values[key]).strip() if key in values else None
        return joined or None

    reply, intent, search = value("reply"), value("intent"), value("search")
    problems = []
    if reply is None:
        problems.append("no reply: line")
    if intent is None:
        problems.append("no intent: line")
    if "search" in values and search is None:
        problems.append("empty search: line")
    problems += [f"repeated {key}: line" for key in dict.fromkeys(repeated)]
    if stray:
        problems.append(f"ignored text: {' '.join(stray)[:40]!r}")
    return ParsedTurn(intent=intent, search=search, reply=reply or "", problems=tuple(problems))


def render_results(documents: Sequence[KBDocument], char_budget: int = 600) -> str:
    """The ``results:`` block the environment inserts: numbered documents within ``char_budget`` characters.

    >>> render_results([KBDocument("k1", "Open 9-5.", "hours")])
    'results: [1] hours: Open 9-5.'
    >>> render_results([])
    'results: (nothing found)'
    """
    if not documents:
        return "results: (nothing found)"
    parts, used = [], 0
    per_doc = max(40, char_budget // len(documents))
    for i, doc in enumerate(documents, start=1):
        body = f"{doc.title}: {doc.text}" if doc.title else doc.text
        body = " ".join(body.split())
        if len(body) > per_doc:
            body = body[: per_doc - 3].rstrip() + "..."
        parts.append(f"[{i}] {body}")
        used += len(parts[-1])
        if used >= char_budget:
            break
    return "results: " + " ".join(parts)


def format_agent_turn(intent: str | None, reply: str, search: str | None = None, results: str | None = None) -> str:
    """Write an agent turn in the process format (``results`` is the rendered block, if any).

    >>> print(format_agent_turn("weather", "Sunny.", search="weather Day=Monday", results="results: [1] Sunny"))
    intent: weather
    search: weather Day=Monday
    results: [1] Sunny
    reply: Sunny.
    """
    lines = [f"intent: {intent or 'unknown'}"]
    if search is not None:
        lines.append(f"search: {search}")
        if results is not None:
            lines.append(results)
    lines.append(f"reply: {reply}")
    return "\n".join(lines)


def render_dialogue(turns: Sequence[Turn], char_budget: int | None = None) -> str:
    """The dialogue so far as text, one ``role: text`` line per message; tool turns show their results.

    Agent turns show only their reply (their process lines are not repeated in later prompts).
    With ``char_budget``, the oldest lines are dropped first so the text fits.

    >>> print(render_dialogue([Turn("customer", "Hi"), Turn("agent", "Hello, how can I help?")]))
    customer: Hi
    agent: Hello, how can I help?
    """
    lines = []
    for turn in turns:
        if turn.role == "tool":
            lines.append(render_results(turn.results))
        else:
            lines.append(ROLE_PREFIX[turn.role] + " ".join(turn.text.split()))
    text = "\n".join(lines)
    if char_budget is not None and len(text) > char_budget:
        text = text[len(text) - char_budget :]
        text = text.split("\n", 1)[-1] if "\n" in text else text
    return text
