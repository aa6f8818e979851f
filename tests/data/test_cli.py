import json

from csrl.dialogue.cli import main


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
