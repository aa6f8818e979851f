"""``csrl`` (dialogue/cli.py): the data commands, and the parser built from the arguments dataclasses."""

import dataclasses
import json

import pytest

from csrl.dialogue.cli import main, parse_arguments
from csrl.dialogue.config import PPOConfig
from csrl.dialogue.pipeline.config import DataConfig, TrainConfig
from csrl.dialogue.pipeline.presets import PRESETS


def test_data_stats_json_on_star(capsys):
    assert main(["data", "stats", "--data", "star", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {"conversations", "turns", "intents", "kb_documents", "splits"} <= stats.keys()
    assert stats["intents"] == 24
    assert set(stats["splits"]) == {"train", "validation", "test"}


def test_validate_reports_each_problem_and_fails(tmp_path, capsys):
    path = tmp_path / "logs.jsonl"
    path.write_text(
        '{"id": "a", "turns": [{"role": "customer", "text": "Hi"}, {"role": "agent", "text": "Hello"}]}\n'
        '{"id": "b", "turns": [{"role": "bot", "text": "Hi"}]}\n'
        "{oops\n"
    )
    assert main(["data", "validate", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:2: field 'turns[0].role': expected one of customer, agent, tool, got 'bot'",
        f"{path}:3: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}: 2 invalid record(s); fix them or pass --skip-invalid",
    ]
    assert main(["data", "validate", str(path), "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        f"{path}: skipped 2 invalid record(s) (turns[].role: expected one of customer, agent, tool: 1; "
        "not valid JSON: 1); 1 valid conversations (2 turns)"
    )


def test_validate_clean_file_and_missing_file(tmp_path, capsys):
    path = tmp_path / "logs.csv"
    path.write_text("conversation_id,role,text\nc1,customer,Hi\nc1,agent,Hello\n")
    assert main(["data", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK, 1 valid conversations (2 turns)"
    assert main(["data", "validate", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def _help_of(config_class, name):
    return next(f for f in dataclasses.fields(config_class) if f.name == name).metadata["help"]


def test_train_help_and_defaults_come_from_the_config_fields(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps the help to the terminal
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for config_class, name in [(DataConfig, "source"), (DataConfig, "seed"), (TrainConfig, "preset"),
                               (PPOConfig, "credit"), (PPOConfig, "total_iterations")]:  # fmt: skip
        assert " ".join(_help_of(config_class, name).split()) in shown, name
    args, _ = parse_arguments(["train"])
    assert (args.data, args.kb, args.seed) == (DataConfig().source, DataConfig().kb, DataConfig().seed)
    assert args.preset is None and args.credit is None  # not given: the preset decides (or, with --resume, the run)


def test_a_bad_preset_exits_2_and_names_the_choices(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--preset", "fast"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fast'" in err and all(repr(name) in err for name in PRESETS)


@pytest.mark.parametrize(
    "command, flag, value",
    [
        (["train"], "ppo-iterations", "5"),
        (["serve", "--run", "runs/quick"], "max-body-bytes", "10"),
        (["data", "stats"], "skip-invalid", None),
        (["data", "validate", "logs.jsonl"], "skip-invalid", None),
    ],
)
def test_dashed_and_underscored_spellings_parse_the_same(command, flag, value):
    def parse(spelling):
        return parse_arguments([*command, f"--{spelling}", *([value] if value else [])])[0]

    assert parse(flag) == parse(flag.replace("-", "_")) != parse_arguments(command)[0]


def test_a_switch_before_the_path_leaves_the_path_alone():
    args, _ = parse_arguments(["data", "validate", "--kb", "kb.jsonl"])
    assert (args.path, args.kb, args.skip_invalid) == ("kb.jsonl", True, False)


def test_resume_without_preset_reads_the_runs_own_config(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "missing"), "--resume"]) == 2
    assert "not a csrl run folder" in capsys.readouterr().err


def test_serve_workers_spread_requests_over_processes(debug_run):
    """``csrl serve --workers 2``: two processes, each with the run loaded, answer on one port."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    csrl = str(Path(sys.executable).with_name("csrl"))
    server = subprocess.Popen(
        [csrl, "serve", "--run", str(debug_run[0]), "--workers", "2", "--policy", "none", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, pids = time.monotonic() + 240, set()
        while len(pids) < 2 and time.monotonic() < deadline:
            try:
                pids.add(httpx.get(f"{url}/healthz", timeout=5).json()["pid"])
            except httpx.TransportError:  # the workers are still loading the run
                time.sleep(1)
        assert len(pids) == 2 and server.pid not in pids  # two workers answered, not the supervisor
        turn = {"history": [{"role": "customer", "text": "Can I book a table?"}], "reply": "For how many people?"}
        results = httpx.post(f"{url}/v1/score", json={"turns": [turn, turn]}, timeout=60).json()["results"]
        assert len(results) == 2 and results[0]["reward"] == results[1]["reward"]
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0]
    assert "died" not in output  # no worker was lost (e.g. killed for loading slower than the readiness check)


def test_serve_needs_at_least_one_worker(capsys):
    assert main(["serve", "--run", "runs/none", "--workers", "0"]) == 2
    assert "--workers 0: give at least 1" in capsys.readouterr().err


def test_need_embedding_reaches_the_training_config(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_train(config, out, **_):
        seen["config"], seen["out"] = config, out
        return {}

    monkeypatch.setattr("csrl.dialogue.pipeline.training.train", fake_train)
    out = str(tmp_path / "run")
    assert main(["train", "--preset", "debug", "--need-embedding", "messages", "--out", out]) == 0
    assert seen["config"].reward.need_embedding == "messages" and seen["out"] == out
    assert main(["train", "--preset", "debug", "--out", out]) == 0
    assert seen["config"].reward.need_embedding == "text"  # the preset's
    with pytest.raises(SystemExit) as exited:
        main(["train", "--need-embedding", "words"])
    assert exited.value.code == 2 and "invalid choice: 'words'" in capsys.readouterr().err
