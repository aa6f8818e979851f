"""Chat logs and knowledge bases: the canonical schema, loaders, the embedded STAR corpus, splits."""

from csrl.data.corpus import Corpus, load_corpus
from csrl.data.knowledge import chunk_markdown, load_knowledge_base, read_knowledge_base
from csrl.data.loaders import join_bursts, load_conversations, load_csv, load_jsonl, load_messages, write_jsonl
from csrl.data.mapping import DEFAULT_ROLES, ColumnMapping, parse_columns, parse_roles, parse_timestamp, read_mapping
from csrl.data.reading import SourceReport
from csrl.data.report import InvalidDataError, LoadReport, Problem
from csrl.data.schema import ROLES, SPLITS, Conversation, KBDocument, Outcome, RecordError, Turn
from csrl.data.splits import assign_splits, by_split, split_counts, split_of
from csrl.data.star import load_star, star_knowledge_base, star_tasks

__all__ = [
    "DEFAULT_ROLES",
    "ROLES",
    "SPLITS",
    "ColumnMapping",
    "Conversation",
    "Corpus",
    "InvalidDataError",
    "KBDocument",
    "LoadReport",
    "Outcome",
    "Problem",
    "RecordError",
    "SourceReport",
    "Turn",
    "assign_splits",
    "by_split",
    "chunk_markdown",
    "join_bursts",
    "load_conversations",
    "load_corpus",
    "load_csv",
    "load_jsonl",
    "load_knowledge_base",
    "load_messages",
    "load_star",
    "parse_columns",
    "parse_roles",
    "parse_timestamp",
    "read_knowledge_base",
    "read_mapping",
    "split_counts",
    "split_of",
    "star_knowledge_base",
    "star_tasks",
    "write_jsonl",
]
