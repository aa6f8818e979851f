"""Chat logs and knowledge bases: the canonical schema, loaders, the embedded STAR corpus, splits."""

from csrl.data.corpus import Corpus, load_corpus
from csrl.data.loaders import (
    load_conversations,
    load_csv,
    load_jsonl,
    load_knowledge_base,
    read_knowledge_base,
    write_jsonl,
)
from csrl.data.report import InvalidDataError, LoadReport, Problem
from csrl.data.schema import ROLES, SPLITS, Conversation, KBDocument, Outcome, RecordError, Turn
from csrl.data.splits import assign_splits, by_split, split_counts, split_of
from csrl.data.star import load_star, star_knowledge_base, star_tasks

__all__ = [
    "ROLES",
    "SPLITS",
    "Conversation",
    "Corpus",
    "InvalidDataError",
    "KBDocument",
    "LoadReport",
    "Outcome",
    "Problem",
    "RecordError",
    "Turn",
    "assign_splits",
    "by_split",
    "load_conversations",
    "load_corpus",
    "load_csv",
    "load_jsonl",
    "load_knowledge_base",
    "load_star",
    "read_knowledge_base",
    "split_counts",
    "split_of",
    "star_knowledge_base",
    "star_tasks",
    "write_jsonl",
]
