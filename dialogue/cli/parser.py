"""The argument parser of ``csrl``: ``transformers.HfArgumentParser`` with plain switches and positional arguments."""

from __future__ import annotations

import argparse
import dataclasses

from transformers import HfArgumentParser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one (for ``None`` / ``False`` the help says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class CommandParser(HfArgumentParser):
    """``HfArgumentParser`` with plain switches and positional arguments.

    A ``bool`` field defaulting to ``False`` is a switch (``--resume``), as in argparse: HfArgumentParser's
    ``--flag [true|false]`` would swallow the path of ``csrl data validate --kb kb.jsonl``. A field whose
    metadata has ``"positional": True`` is a positional argument (``csrl data validate PATH``).
    """

    def __init__(self, dataclass_types=None, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(dataclass_types, **kwargs)

    @staticmethod
    def _parse_dataclass_field(parser, dataclass_field: dataclasses.Field):
        metadata = dict(dataclass_field.metadata)
        name, kind = dataclass_field.name, dataclass_field.type  # the type is resolved by HfArgumentParser
        if metadata.pop("positional", False):
            parser.add_argument(name, type=kind, **metadata)
        elif kind is bool and dataclass_field.default is False:
            parser.add_argument(*dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"]), action="store_true",
                                **metadata)  # fmt: skip
        else:
            HfArgumentParser._parse_dataclass_field(parser, dataclass_field)
