"""PPO checkpoints: written atomically, found again after a kill, loaded with every RNG state.

A checkpoint is written to a temporary folder and renamed into place, then ``latest.json`` is replaced
atomically: a kill at any moment leaves the previous complete checkpoint as the latest::

    run_dir/checkpoints/latest.json    {"iteration": n, "path": "iter_000n"}: the last complete iteration
    run_dir/checkpoints/iter_000n/     policy (ActorCritic.save: safetensors) + state.pt + trainer_state.json
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from csrl.data.files import write_text_atomic

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE_FILE = "state.pt"
TRAINER_STATE_FILE = "trainer_state.json"


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """``(iteration, folder)`` of the last complete checkpoint in ``run_dir``, or ``None``."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    latest = json.loads(pointer.read_text(encoding="utf-8"))
    return int(latest["iteration"]), pointer.parent / latest["path"]


def save_checkpoint(run_dir: Path, iteration: int, policy, optimizer, metrics: dict, keep: int = 2) -> Path:
    """Write iteration ``iteration``'s checkpoint atomically and point ``latest.json`` at it; keep the last ``keep``."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"iter_{iteration:04d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # a save killed half-way
    policy.save(tmp)
    state = {
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }
    torch.save(state, tmp / STATE_FILE)
    (tmp / TRAINER_STATE_FILE).write_text(json.dumps({"iteration": iteration, "metrics": metrics}) + "\n")
    final = root / name
    if final.exists():  # left by a run that died after this rename but before moving latest.json
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST, json.dumps({"iteration": iteration, "path": name}) + "\n")
    for old in sorted(root.glob("iter_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, policy, optimizer) -> dict:
    """Load a checkpoint into ``policy``, ``optimizer`` and the global RNGs; returns its trainer state."""
    from csrl.dialogue.models.policy import ActorCritic

    saved = ActorCritic.load(folder)
    policy.load_state_dict(saved.state_dict())
    state = torch.load(folder / STATE_FILE, weights_only=False)  # our own file: optimizer state and RNG states
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    return json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def latest_policy_folder(run_dir: str | Path) -> Path | None:
    """The newest policy of a PPO run: the last complete checkpoint, else ``run_dir/policy``; ``None`` if neither."""
    found = latest_checkpoint(run_dir)
    if found and found[1].is_dir():
        return found[1]
    final = Path(run_dir) / "policy"
    return final if final.is_dir() else None
