"""Data-parallel training: ``csrl train`` under ``torchrun`` with 2 CPU processes (gloo), then resumed by one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csrl.dialogue.trainer.ppo import minibatch_bounds

CSRL = str(Path(sys.executable).with_name("csrl"))


def _train(out: Path, *launcher: str, iterations: int, resume: bool = False) -> subprocess.CompletedProcess:
    command = [*launcher, CSRL, "train", "--preset", "debug", "--out", str(out), "--quiet",
               "--ppo-iterations", str(iterations)] + (["--resume"] if resume else [])  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_process_run(debug_run, tmp_path_factory):
    """A debug run whose SFT and first PPO iteration ran in 2 processes (its reward stage copied from ``debug_run``)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    shutil.copytree(debug_run[0] / "rewards", out / "rewards")  # built by one process either way: main_first
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = _train(out, *torchrun, iterations=1)
    return out, done


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_one_model_and_log_both(two_process_run):
    from csrl.dialogue.models.policy import ActorCritic
    from csrl.dialogue.trainer.buffer import TrajectoryBuffer
    from csrl.dialogue.trainer.processes import parameter_digest

    run, done = two_process_run
    assert done.stdout.count("trained: ") == 1  # the main process prints, the other is quiet
    sft = json.loads((run / "sft" / "DONE").read_text())
    assert sft["world_size"] == 2
    (first,) = _metrics(run)
    assert first["distributed/world_size"] == 2
    assert first["rollout/episodes"] == 4  # rollout_batch_size 2 in each process
    digests = first["distributed/param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # the same weights in both processes after the update
    checkpoint = ActorCritic.load(run / "ppo" / "checkpoints" / "iter_0001")
    assert parameter_digest(checkpoint) == digests[0]  # and they are the weights the main process saved
    buffer = TrajectoryBuffer.load(run / "ppo" / "buffers" / "iter_0001.parquet")
    assert sorted({r.episode_id for r in buffer}) == [0, 1, 2, 3]  # rank 0 played episodes 0-1, rank 1 2-3
    assert len(buffer) == first["rollout/turns"]
    rank_returns = [sum(r.reward for r in buffer if r.episode_id in ids) for ids in ({0, 1}, {2, 3})]
    assert rank_returns[0] != rank_returns[1]  # each process played its own episodes (seeded by its rank)


def test_a_two_process_run_resumes_in_one_process(two_process_run):
    from csrl.dialogue.models.policy import ActorCritic
    from csrl.dialogue.trainer.processes import parameter_digest

    run, _ = two_process_run
    after_two = parameter_digest(ActorCritic.load(run / "ppo" / "checkpoints" / "iter_0001"))
    done = _train(run, iterations=2, resume=True)
    assert "sft: cached" in done.stdout + done.stderr
    first, second = _metrics(run)
    assert (first["distributed/world_size"], second["distributed/world_size"]) == (2, 1)
    assert second["iteration"] == 2 and second["rollout/episodes"] == 2
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["ppo"]["resumed_from"] == 1
    assert parameter_digest(ActorCritic.load(run / "ppo" / "checkpoints" / "iter_0002")) != after_two  # it trained on


def test_minibatch_bounds_give_every_process_the_same_number_of_steps():
    assert minibatch_bounds(8, 2, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]  # one process: the configured minibatches
    for turns in range(1, 12):
        bounds = minibatch_bounds(turns, 4, 3)
        assert len(bounds) == 3
        assert bounds[0][0] == 0 and bounds[-1][1] == turns  # every turn once, in order
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
