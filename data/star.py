"""Adapter for the embedded STAR corpus (Mosig et al., 2020; MIT, see ``data/star/LICENSE.txt``).

STAR is a Wizard-of-Oz corpus: a crowd worker (the *User*) talks to another (the *Wizard*) who
answers with response templates or free text and queries a mock database. We map it to the
canonical record as follows:

- ``User`` ``utter`` events become ``customer`` turns; ``Wizard`` ``utter`` and ``pick_suggestion``
  events become ``agent`` turns, labelled with the task the wizard is working on at that moment.
- A ``query`` with its ``return_item`` becomes a ``tool`` turn whose results are KB documents.
- The conversation ``intent`` is the first task the wizard worked on (24 tasks in all).
- ``outcome.completed`` is ``CompletionLevel == "Complete"``; ``outcome.satisfied`` is the user's
  answer to "Did the assistant stay calm and helpful?" (``None`` where the user gave none).
- Dropped: the hidden ``instruct`` guidance to the user, the wizard's ``request_suggestions``
  drafts (never shown to the user) and bookkeeping events.

The knowledge base (:func:`star_knowledge_base`) holds a procedure document per task (its API
inputs and its dialogue graph rendered with the response templates), a document per response
template, and one document per distinct database record the wizards retrieved.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
from functools import lru_cache
from pathlib import Path

from csrl.data.report import LoadReport, Problem
from csrl.data.schema import Conversation, KBDocument, Outcome, Turn

STAR_DIR = Path(__file__).parent / "star"
DIALOGUES_FILE = STAR_DIR / "dialogues.jsonl.xz"
APIS_FILE = STAR_DIR / "apis_dbs_tasks.json.xz"

_SATISFACTION_QUESTION = "calm and helpful"
_CONSTRAINT_OPERATORS = {
    "is_equal_to": "=",
    "is_not": "!=",
    "is_at_least": ">=",
    "is_at_most": "<=",
    "is_less_than": "<",
    "is_greater_than": ">",
    "is_one_of": " one of ",
    "contains": " contains ",
    "contains_not": " lacks ",
}
_CONSTRAINT_CALL = re.compile(r"^api\.(\w+)\((.*)\)$", re.DOTALL)


def _words(name: str) -> str:
    """``TemperatureCelsius`` -> ``Temperature Celsius``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")


def _plain(value) -> str:
    """Render a JSON value from STAR as readable text."""
    if isinstance(value, str):
        try:  # constraint values are JSON literals: '"Detroit"', '["a","b"]'
            value = json.loads(value)
        except json.JSONDecodeError:
            return value.strip()
    if isinstance(value, list):
        return ", ".join(_plain(v) if not isinstance(v, str) else v for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip()


def render_query(api_name: str, constraints: list[dict]) -> str:
    """Render a wizard's API call as a search string: ``weather Day=Tuesday City=Detroit``."""
    parts = [api_name]
    for constraint in constraints:
        for name, raw in constraint.items():
            match = _CONSTRAINT_CALL.match(str(raw))
            if match:
                op = _CONSTRAINT_OPERATORS.get(match.group(1), f" {match.group(1)} ")
                parts.append(f"{name}{op}{_plain(match.group(2))}")
            else:
                parts.append(f"{name}={_plain(raw)}")
    return " ".join(parts)


def item_document(item: dict) -> KBDocument:
    """A database record returned to the wizard, as a KB document with a content-hash id.

    STAR's record ids repeat across records with different content, so the id is a hash of the
    record itself: the same record returned in two dialogues is one document.
    """
    canonical = json.dumps(item, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:12]
    api = item.get("APIName", "record")
    fields = [f"{_words(k)}: {_plain(v)}" for k, v in item.items() if k != "APIName"]
    return KBDocument(
        id=f"star-kb-{digest}",
        title=f"{api} record",
        text=f"{_words(api)} result. " + "; ".join(fields) + ".",
        intent=api,
    )


def _outcome(dialogue: dict) -> Outcome:
    satisfied = None
    for answer in dialogue.get("UserQuestionnaire") or []:
        if _SATISFACTION_QUESTION in answer.get("Question", ""):
            satisfied = bool(answer.get("Answer"))
    return Outcome(satisfied=satisfied, completed=dialogue.get("CompletionLevel") == "Complete")


def _conversation_intent(dialogue: dict) -> str:
    for event in dialogue["Events"]:
        if event["Action"] == "select_task":
            return event["Task"]
        if event["Action"] == "query":
            return event["APIName"]
    return dialogue["Scenario"]["WizardCapabilities"][0]["Task"]


def convert_dialogue(dialogue: dict) -> Conversation:
    """Turn one raw STAR dialogue into a :class:`Conversation` (``split`` left unset)."""
    intent = _conversation_intent(dialogue)
    active_task = intent
    turns: list[Turn] = []
    pending_query: str | None = None
    for event in dialogue["Events"]:
        agent, action = event["Agent"], event["Action"]
        if action == "select_task":
            active_task = event["Task"]
        elif agent == "User" and action == "utter":
            turns.append(Turn(role="customer", text=event["Text"].strip()))
        elif agent == "Wizard" and action in ("utter", "pick_suggestion"):
            turns.append(Turn(role="agent", text=event["Text"].strip(), intent=active_task))
        elif action == "query":
            active_task = event["APIName"]
            pending_query = render_query(event["APIName"], event.get("Constraints", []))
        elif action == "return_item":
            assert pending_query is not None, f"STAR dialogue {dialogue['DialogueID']}: result without a query"
            item = event.get("Item")
            results = (item_document(item),) if item else ()
            turns.append(Turn(role="tool", query=pending_query, results=results))
            pending_query = None
    return Conversation(
        id=f"star-{dialogue['DialogueID']}", turns=tuple(turns), intent=intent, outcome=_outcome(dialogue)
    )


def iter_raw_dialogues(path: Path = DIALOGUES_FILE):
    """Yield the raw STAR dialogue objects from the shipped ``.jsonl.xz`` file."""
    with lzma.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def load_star(path: Path = DIALOGUES_FILE) -> LoadReport:
    """Load and convert the STAR corpus.

    Dialogues that end before the wizard says anything (early disconnects) have nothing to learn
    from: they are reported in ``LoadReport.problems``, not returned.

    Raises:
        FileNotFoundError: if the shipped corpus is missing (a broken install).

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"STAR corpus not found at {path}: reinstall csrl or pass --data PATH")
    report = LoadReport(source=str(path))
    for line_number, dialogue in enumerate(iter_raw_dialogues(path), start=1):
        conversation = convert_dialogue(dialogue)
        if any(t.role == "agent" for t in conversation.turns):
            report.conversations.append(conversation)
        else:
            report.problems.append(
                Problem(str(path), line_number, "turns", "no agent turn (the dialogue ended before the wizard replied)")
            )
    return report


@lru_cache(maxsize=1)
def _apis() -> dict:
    with lzma.open(APIS_FILE, "rt", encoding="utf-8") as f:
        return json.load(f)


def star_tasks() -> list[str]:
    """The 24 STAR task names (the intent label set)."""
    return sorted(
        path.split("/")[1] for path in _apis() if path.startswith("tasks/") and path.endswith("responses.json")
    )


def _procedure_text(task: str, spec: dict, api: dict | None) -> str:
    replies, graph = spec["replies"], spec.get("graph", {})
    lines = [f"Procedure for {_words(task)}."]
    if api:
        inputs = []
        for field in api.get("input", []):
            name = field.get("ReadableName") or _words(field["Name"])
            options = field.get("Categories")
            inputs.append(f"{name} ({', '.join(map(str, options))})" if options else name)
        lines.append("Information the system takes: " + "; ".join(inputs) + ".")
        if api.get("required"):
            lines.append("Required: " + ", ".join(_words(r) for r in api["required"]) + ".")
    step, seen, steps = "hello", set(), []
    while step in graph and step not in seen:  # walk the happy path of the dialogue graph
        seen.add(step)
        if step in replies and not step.startswith("query"):
            steps.append(replies[step])
        step = graph[step]
    if step in replies and step not in seen and not step.startswith("query"):
        steps.append(replies[step])
    if steps:
        lines.append("Steps: " + " Then: ".join(steps))
    return " ".join(lines)


def star_knowledge_base(conversations: list[Conversation] | None = None) -> list[KBDocument]:
    """The STAR knowledge base: task procedures, response templates and retrieved records.

    Args:
        conversations: the converted corpus whose tool results become record documents; loaded
            from the shipped file when omitted.

    """
    apis = _apis()
    docs: dict[str, KBDocument] = {}
    for task in star_tasks():
        spec = apis[f"tasks/{task}/{task}.json"]
        api = apis.get(f"apis/apis/{task}.json")
        proc = KBDocument(
            id=f"star-task-{task}", title=f"{task} procedure", text=_procedure_text(task, spec, api), intent=task
        )
        docs[proc.id] = proc
        for label, template in spec["replies"].items():
            if label.startswith("query") or not template.strip():
                continue
            doc = KBDocument(id=f"star-reply-{task}-{label}", title=f"{task}: {label}", text=template, intent=task)
            docs[doc.id] = doc
    for conversation in conversations if conversations is not None else load_star().conversations:
        for turn in conversation.turns:
            for doc in turn.results:
                docs.setdefault(doc.id, doc)
    return list(docs.values())
