"""The ``csrl`` command line. Each subcommand imports its heavy dependencies only when it runs."""

from __future__ import annotations

import argparse
import json
import sys


def _data_stats(args: argparse.Namespace) -> int:
    from data import load_corpus

    corpus = load_corpus(args.data, kb=args.kb, seed=args.seed, skip_invalid=args.skip_invalid)
    stats = corpus.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
        return 0
    print(f"source        {stats['source']}")
    print(f"conversations {stats['conversations']:,}")
    roles = ", ".join(f"{n:,} {role}" for role, n in stats["turns_by_role"].items())
    print(f"turns         {stats['turns']:,} ({roles})")
    print(f"intents       {stats['intents']}")
    print(f"kb documents  {stats['kb_documents']:,}")
    print("splits        " + ", ".join(f"{name} {n:,}" for name, n in stats["splits"].items()))
    print(f"ratings       {stats['ratings']:,}")
    sat = stats["outcome_satisfied"]
    print(f"satisfied     {sat['true']:,} yes, {sat['false']:,} no")
    skipped = stats["skipped"]
    reasons = "; ".join(f"{reason}: {n:,}" for reason, n in skipped["reasons"].items())
    print(f"skipped       {skipped['count']:,}" + (f" ({reasons})" if reasons else ""))
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from data import load_conversations, read_knowledge_base

    if args.kb:
        report = read_knowledge_base(args.path)
        summary = f"{len(report.documents):,} valid knowledge-base documents"
    else:
        report = load_conversations(args.path, skip_invalid=True)
        turns = sum(len(c.turns) for c in report.conversations)
        summary = f"{len(report.conversations):,} valid conversations ({turns:,} turns)"
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if not report.problems:
        print(f"{args.path}: OK, {summary}")
        return 0
    if not args.skip_invalid:
        print(
            f"{args.path}: {len(report.problems)} invalid record(s); fix them or pass --skip-invalid", file=sys.stderr
        )
        return 1
    reasons = "; ".join(f"{reason}: {n}" for reason, n in report.skipped_reasons().items())
    print(f"{args.path}: skipped {len(report.problems)} invalid record(s) ({reasons}); {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``csrl`` subcommand."""
    parser = argparse.ArgumentParser(prog="csrl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect and validate chat logs")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    stats = data_commands.add_parser("stats", help="count conversations, turns, intents, KB documents and splits")
    stats.add_argument("--data", default="star", help="'star' (embedded) or a .jsonl / .csv file of logs")
    stats.add_argument("--kb", default=None, help="a JSON Lines knowledge base (default: STAR's, or the logs' own)")
    stats.add_argument("--seed", type=int, default=0, help="split seed")
    stats.add_argument("--skip-invalid", action="store_true", help="skip and count invalid records")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=_data_stats)
    validate = data_commands.add_parser(
        "validate", help="check a logs file; name the file, line and field of each problem"
    )
    validate.add_argument("path", help="a .jsonl or .csv file of logs (or a KB with --kb)")
    validate.add_argument("--kb", action="store_true", help="the file is a knowledge base, not logs")
    validate.add_argument("--skip-invalid", action="store_true", help="report problems but exit 0")
    validate.set_defaults(handler=_data_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``csrl`` with ``argv`` (default: the process arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, IsADirectoryError, ValueError) as err:
        print(f"csrl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
