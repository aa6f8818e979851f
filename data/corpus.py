"""A corpus: the conversations of one source with their splits, and the knowledge base beside them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from csrl.data.knowledge import load_knowledge_base
from csrl.data.loaders import load_conversations
from csrl.data.mapping import ColumnMapping
from csrl.data.reading import SourceReport
from csrl.data.report import LoadReport
from csrl.data.schema import Conversation, KBDocument
from csrl.data.splits import assign_splits, by_split, split_counts


@dataclass
class Corpus:
    """Conversations (each with a split) and the knowledge base they are grounded in."""

    conversations: list[Conversation]
    knowledge_base: list[KBDocument]
    report: LoadReport

    def split(self, name: str) -> list[Conversation]:
        """The conversations of split ``name`` (``train``, ``validation`` or ``test``)."""
        return by_split(self.conversations, name)

    @property
    def intents(self) -> list[str]:
        """Every intent label in the logs, conversation- or turn-level, sorted."""
        labels = {c.intent for c in self.conversations if c.intent}
        labels |= {t.intent for c in self.conversations for t in c.turns if t.intent}
        return sorted(labels)

    def stats(self) -> dict:
        """Counts a user checks first: conversations, turns by role, intents, KB size, splits, skips.

        A CSV source adds ``ignored`` (rows of a role that is neither customer nor agent, by reason)
        and ``merged_messages`` (messages joined into the turn before them).
        """
        roles = Counter(t.role for c in self.conversations for t in c.turns)
        ratings = sum(1 for c in self.conversations for t in c.turns if t.rating is not None)
        satisfied = Counter(c.outcome.satisfied for c in self.conversations if c.outcome)
        stats = {
            "source": self.report.source,
            "conversations": len(self.conversations),
            "turns": sum(roles.values()),
            "turns_by_role": {role: roles.get(role, 0) for role in ("customer", "agent", "tool")},
            "intents": len(self.intents),
            "kb_documents": len(self.knowledge_base),
            "splits": split_counts(self.conversations),
            "ratings": ratings,
            "outcome_satisfied": {"true": satisfied.get(True, 0), "false": satisfied.get(False, 0)},
            "skipped": {"count": len(self.report.problems), "reasons": self.report.skipped_reasons()},
        }
        if isinstance(self.report, SourceReport):
            stats["ignored"] = {"count": len(self.report.ignored), "reasons": self.report.ignored_reasons()}
            stats["merged_messages"] = self.report.merged_messages
        return stats


def _documents_in_logs(conversations: list[Conversation]) -> list[KBDocument]:
    docs: dict[str, KBDocument] = {}
    for conversation in conversations:
        for turn in conversation.turns:
            for doc in turn.results:
                docs.setdefault(doc.id, doc)
    return list(docs.values())


def load_corpus(
    source: str | Path = "star",
    kb: str | Path | None = None,
    *,
    seed: int = 0,
    skip_invalid: bool = False,
    mapping: ColumnMapping | None = None,
) -> Corpus:
    """Load chat logs, give them seeded splits and find their knowledge base.

    Args:
        source: ``"star"`` for the embedded corpus, or a ``.jsonl`` / ``.csv`` file of logs.
        kb: a knowledge base: JSON Lines, CSV or a folder of Markdown / text files. Default: STAR's for
            ``"star"``, otherwise the documents that the logs' tool turns returned (possibly none).
        seed: the split seed.
        skip_invalid: report and skip invalid records instead of raising.
        mapping: the columns and role values of a CSV export (see :class:`~csrl.data.mapping.ColumnMapping`).

    """
    report = load_conversations(source, skip_invalid=skip_invalid, mapping=mapping)
    conversations = assign_splits(report.conversations, seed=seed)
    if kb is not None:
        knowledge_base = load_knowledge_base(kb, skip_invalid=skip_invalid)
    elif str(source) == "star":
        from csrl.data.star import star_knowledge_base

        knowledge_base = star_knowledge_base(conversations)
    else:
        knowledge_base = _documents_in_logs(conversations)
    report.conversations = conversations
    return Corpus(conversations=conversations, knowledge_base=knowledge_base, report=report)
