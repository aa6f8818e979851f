"""``csrl train``'s first stage for logs of any shape: what the logs lack is inferred, said, and written down.

Only customer and agent text is required. Before the reward models train:

- **intents**: conversations keep their logged labels. An ``intents.json`` the user gave (edited from a
  discovery, or only names and descriptions) labels every unlabelled conversation by its nearest intent.
  Without one, logs with some labels extend them to the rest (semi-supervised: each unlabelled
  conversation takes the nearest labelled intent); logs without any are clustered (intent discovery,
  :mod:`csrl.rewards.discovery`) on the training split, and held-out conversations take the nearest
  discovered intent, so evaluation never sees its own labels made from itself;
- **knowledge base**: the user's ``--kb``, else the documents the logs' tool turns returned, else the
  informative agent answers of the training split (:mod:`csrl.rewards.answer_kb`).

The retrieval calibration and the satisfaction labels are inferred inside the reward stage
(:mod:`csrl.rewards.stack`), which adds what it did to the same record. Everything lands in the run's
``rewards/`` folder: ``inferred.json`` (what was inferred, from what, how many), ``intents.json`` and
``intent_assignments.csv`` (the intent of every conversation and where it came from), so a reopened run
(:mod:`csrl.dialogue.pipeline.runs`) sees the same labels.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from csrl.data import Conversation, Corpus
from csrl.data.files import write_text_atomic
from csrl.rewards.stack import INFERRED_FILE

INTENTS_FILE = "intents.json"
ASSIGNMENTS_FILE = "intent_assignments.csv"
KB_FILE = "knowledge_base.jsonl"  # the reward folder's copy of the KB (the reward stage writes the same file)
NEED_WORDS = 40  # words of the customer's opening messages that make a conversation's need
# Discovery clusters at most this many training conversations (a seeded sample); the rest take the nearest
# discovered intent, as held-out conversations do. Spectral clustering and its stability runs grow faster than
# the logs: 8k needs took 124 s, 80k ran over 30 minutes without finishing (bench/scale.py).
MAX_DISCOVERY_CONVERSATIONS = 10_000


def conversation_need(conversation: Conversation) -> str:
    """What the customer came for: their opening messages (greetings skipped), up to ``NEED_WORDS`` words.

    >>> from csrl.data.schema import Turn
    >>> conversation_need(Conversation("c", (Turn("customer", "Hi!"), Turn("agent", "Hello."),
    ...                                      Turn("customer", "My card was stolen"))))
    'My card was stolen'
    """
    from csrl.rewards.intent import is_greeting_only

    words: list[str] = []
    for turn in conversation.turns:
        if turn.role != "customer" or is_greeting_only(turn.text):
            continue
        words += turn.text.split()
        if len(words) >= NEED_WORDS:
            break
    if not words:  # a conversation of greetings only: its first customer message is all there is
        words = next((t.text.split() for t in conversation.turns if t.role == "customer"), [])
    return " ".join(words[:NEED_WORDS])


def _labelled(conversation: Conversation) -> bool:
    return bool(conversation.intent or any(t.intent for t in conversation.turns))


def _with_intent(conversation: Conversation, intent: str) -> Conversation:
    return dataclasses.replace(conversation, intent=intent)


def infer_intents(corpus: Corpus, encoder, *, intents_file: str | None, max_intents: int, seed: int) -> tuple:
    """Label every conversation of ``corpus`` with an intent; returns ``(conversations, intents, record)``.

    ``intents`` is the intent list in the ``intents.json`` form (None when the logs' own labels cover
    every conversation); ``record`` says what was done, for ``inferred.json``.
    """
    conversations = corpus.conversations
    unlabelled = [i for i, c in enumerate(conversations) if not _labelled(c)]
    record: dict = {"logged": len(conversations) - len(unlabelled), "conversations": len(conversations)}
    if not unlabelled and intents_file is None:
        return conversations, None, {**record, "source": "logged labels"}
    from csrl.rewards.discovery import assign_intents, discover_intents, read_intents_json

    conversations = list(conversations)
    if intents_file is not None:
        intents = read_intents_json(intents_file)
        source = f"the intents file {intents_file}"
    elif record["logged"]:
        by_intent: dict[str, list[str]] = {}
        for c in conversations:
            if _labelled(c) and c.split == "train":
                by_intent.setdefault(c.intent or next(t.intent for t in c.turns if t.intent), []).append(
                    conversation_need(c)
                )
        intents = [{"name": name, "description": "", "examples": needs} for name, needs in sorted(by_intent.items())]
        source = "the nearest logged intent (semi-supervised)"
    else:
        train = [i for i in unlabelled if conversations[i].split == "train"]
        if len(train) < 2:
            raise ValueError(
                f"intent discovery needs training conversations: got {len(train)}; use more logs or pass --intents"
            )
        if len(train) > MAX_DISCOVERY_CONVERSATIONS:
            rng = np.random.default_rng(seed)
            train = sorted(rng.choice(train, MAX_DISCOVERY_CONVERSATIONS, replace=False).tolist())
        discovery = discover_intents(
            [conversation_need(conversations[i]) for i in train], encoder, max_intents=max_intents, seed=seed
        )
        intents = discovery.to_dict()["intents"]  # the editable fields (what assign_intents reads)
        for i, label in zip(train, discovery.labels, strict=True):
            conversations[i] = _with_intent(conversations[i], discovery.name_of(label))
        clustered = set(train)
        unlabelled = [i for i in unlabelled if i not in clustered]
        source = (
            f"intent discovery on {len(train):,} training conversations (the others: the nearest discovered intent)"
        )
        record["discovered"] = len(intents)
    if unlabelled:
        names = assign_intents([conversation_need(conversations[i]) for i in unlabelled], intents, encoder)
        for i, name in zip(unlabelled, names, strict=True):
            conversations[i] = _with_intent(conversations[i], name)
    record.update(source=source, inferred=len(conversations) - record["logged"], intents=len(intents))
    return conversations, intents, record


def infer_knowledge_base(corpus: Corpus, encoder, *, given: str) -> tuple[list, dict]:
    """The run's KB: the one the corpus came with (``given`` says where from), else answer documents; its record."""
    from csrl.rewards.answer_kb import answer_documents

    if corpus.knowledge_base:
        return list(corpus.knowledge_base), {"source": given, "documents": len(corpus.knowledge_base)}
    documents = answer_documents(corpus.split("train"), encoder)
    answers = "the informative agent answers of the training split, de-duplicated"
    return documents, {"source": answers, "documents": len(documents), "inferred": True}


def infer_annotations(corpus: Corpus, folder: Path, encoder, *, kb_source: str, intents_file: str | None,
                      max_intents: int, seed: int, log=print) -> Corpus:  # fmt: skip
    """Fill in what the logs lack (intents, knowledge base), write it down, return the completed corpus.

    Done once per run: ``folder/inferred.json`` is written last, and a run that has it reloads the
    inferred intents and knowledge base instead of inferring them again (a resumed run sees the same ones).
    """
    from csrl.data import load_knowledge_base, write_jsonl

    if (folder / INFERRED_FILE).is_file():
        completed = apply_assignments(corpus, folder)
        if not completed.knowledge_base:
            documents = load_knowledge_base(folder / KB_FILE)
            completed = Corpus(completed.conversations, documents, completed.report)
        return completed
    folder.mkdir(parents=True, exist_ok=True)
    conversations, intents, intents_record = infer_intents(
        corpus, encoder, intents_file=intents_file, max_intents=max_intents, seed=seed
    )
    completed = Corpus(conversations=conversations, knowledge_base=corpus.knowledge_base, report=corpus.report)
    documents, kb_record = infer_knowledge_base(completed, encoder, given=kb_source)
    completed = Corpus(conversations=conversations, knowledge_base=documents, report=corpus.report)
    if intents is not None:
        write_intents(intents, folder / INTENTS_FILE)
        write_assignments(corpus.conversations, conversations, folder / ASSIGNMENTS_FILE)
        log(f"inferred: intents from {intents_record['source']} ({intents_record['inferred']:,} of "
            f"{intents_record['conversations']:,} conversations, {intents_record['intents']} intents): "
            f"{folder / INTENTS_FILE}")  # fmt: skip
    if kb_record.get("inferred"):  # kept for a resumed run; a given KB is reloaded from where it came from
        log(f"inferred: a knowledge base of {kb_record['documents']:,} documents from {kb_record['source']}")
        write_jsonl(documents, folder / KB_FILE)
    record = {"intents": intents_record, "knowledge_base": kb_record}
    write_text_atomic(folder / INFERRED_FILE, json.dumps(record, indent=2) + "\n")
    return completed


def write_intents(intents: list[dict], path: Path, examples: int = 5) -> None:
    """The editable ``intents.json``: name, description, size and a few examples of each intent."""
    entries = [
        {"name": intent["name"], "description": intent.get("description", ""),
         "size": intent.get("size", len(intent.get("examples", []))),
         "examples": list(intent.get("examples", []))[:examples]}
        for intent in intents
    ]  # fmt: skip
    write_text_atomic(path, json.dumps({"intents": entries}, indent=2, ensure_ascii=False) + "\n")


def write_assignments(before: list[Conversation], after: list[Conversation], path: Path) -> None:
    """``conversation_id,intent,source`` for every conversation (source: ``logged`` or ``inferred``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["conversation_id", "intent", "source"])
    for old, new in zip(before, after, strict=True):
        writer.writerow([new.id, new.intent or "", "logged" if _labelled(old) else "inferred"])
    write_text_atomic(path, out.getvalue())


def apply_assignments(corpus: Corpus, folder: Path) -> Corpus:
    """The corpus with the intents a run inferred (``folder/intent_assignments.csv``), if it inferred any."""
    path = folder / ASSIGNMENTS_FILE
    if not path.is_file():
        return corpus
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle)
        inferred = {row["conversation_id"]: row["intent"] for row in rows if row["source"] == "inferred"}
    conversations = [_with_intent(c, inferred[c.id]) if c.id in inferred else c for c in corpus.conversations]
    return Corpus(conversations=conversations, knowledge_base=corpus.knowledge_base, report=corpus.report)
