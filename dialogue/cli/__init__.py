"""The ``csrl`` command line (``csrl = csrl.dialogue.cli:main``): options, parser and subcommands."""

from csrl.dialogue.cli.commands import build_parser, main, parse_arguments

__all__ = ["build_parser", "main", "parse_arguments"]
