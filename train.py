"""The training entry point: ``python train.py [options]`` is ``csrl train [options]``.

The stages live in :mod:`csrl.dialogue.pipeline.training`, their configuration in
:mod:`csrl.dialogue.pipeline.config` and the ``debug`` / ``quick`` / ``full`` sizes in
:mod:`csrl.dialogue.pipeline.presets`; this file only hands the command line over, so that the import
direction stays ``data`` ← ``rewards`` ← ``env`` ← ``dialogue`` ← ``train.py``.

    python train.py --preset quick --out runs/quick
"""

from __future__ import annotations

import sys

from csrl.dialogue.cli import main


def run(argv: list[str] | None = None) -> int:
    """``csrl train`` with ``argv`` (default: the process arguments)."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(run())
