import json

import pytest

from csrl.data import InvalidDataError, load_conversations, load_csv, load_jsonl, load_knowledge_base, write_jsonl

GOOD = {"id": "ok", "turns": [{"role": "customer", "text": "Hi"}, {"role": "agent", "text": "Hello"}]}


def _line(record) -> bytes:
    return json.dumps(record).encode()


# (raw line, expected problem text after "bad.jsonl:2: ") - the good record is always line 1.
BAD_JSONL = [
    (b'{"id": "x", "turns": [', "not valid JSON: Expecting value (column 23)"),
    (
        _line({"id": "a", "turns": [{"text": "Hi"}, {"role": "agent", "text": "Hello"}]}),
        "field 'turns[0].role': missing (expected one of customer, agent, tool)",
    ),
    (
        _line({"id": "b", "turns": [{"role": "bot", "text": "Hi"}, {"role": "agent", "text": "Hello"}]}),
        "field 'turns[0].role': expected one of customer, agent, tool, got 'bot'",
    ),
    (
        _line({"id": "c", "turns": [{"role": "customer", "text": "  "}, {"role": "agent", "text": "Hello"}]}),
        "field 'turns[0].text': empty (expected non-empty text)",
    ),
    (
        _line(
            {"id": "d", "turns": [{"role": "agent", "text": "Hello"}, {"role": "customer", "text": "ok", "rating": 7}]}
        ),
        "field 'turns[1].rating': expected an integer from 1 to 5, got 7",
    ),
    (
        b'{"id": "e", "turns": [{"role": "customer", "text": "caf\xe9"}]}',
        "not valid UTF-8: byte 0xe9 at position 55",
    ),
    (
        _line({"id": "f", "turns": [{"role": "customer", "text": "Hi"}]}),
        "field 'turns': no agent turn (a conversation needs at least one agent reply)",
    ),
    (_line(GOOD), "field 'id': duplicate id 'ok' (first seen on line 1)"),
    (_line({"turns": GOOD["turns"]}), "field 'id': missing (expected a string)"),
    (_line([1, 2]), "field 'record': expected an object, got list [1, 2]"),
    (
        _line({"id": "g", "turns": [{"role": "tool", "results": []}, {"role": "agent", "text": "Hi"}]}),
        "field 'turns[0].query': missing (expected a string)",
    ),
    (
        _line({**GOOD, "id": "h", "split": "dev"}),
        "field 'split': expected one of train, validation, test or null, got 'dev'",
    ),
    (
        _line({**GOOD, "id": "i", "outcome": {"satisfied": "yes"}}),
        "field 'outcome.satisfied': expected true, false or null, got 'yes'",
    ),
    (
        _line({"id": "j", "turns": [{"role": "agent", "text": "Hi", "rating": 3}]}),
        "field 'turns[0].rating': only customer turns carry a rating",
    ),
]


@pytest.mark.parametrize(("line", "expected"), BAD_JSONL, ids=[e.split(":")[0][:40] for _, e in BAD_JSONL])
def test_bad_jsonl_record_names_file_line_and_field(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_line(GOOD) + b"\n" + line + b"\n")
    with pytest.raises(InvalidDataError) as err:
        load_jsonl(path)
    assert [str(p) for p in err.value.problems] == [f"{path}:2: {expected}"]
    report = load_jsonl(path, skip_invalid=True)
    assert [c.id for c in report.conversations] == ["ok"]
    assert len(report.problems) == 1


def test_every_problem_is_reported_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"\n".join([_line(GOOD), b"", b"not json", b"   ", b"{}"]) + b"\n")
    report = load_jsonl(path, skip_invalid=True)
    assert [(p.line, p.field) for p in report.problems] == [(3, None), (5, "id")]
    assert report.skipped_reasons() == {"not valid JSON": 1, "id: missing": 1}


def test_invalid_data_error_says_how_to_proceed(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text("nope\n")
    with pytest.raises(InvalidDataError, match=r"1 invalid record\(s\); fix them or pass --skip-invalid"):
        load_jsonl(path)


def test_jsonl_round_trip_keeps_non_ascii(tmp_path):
    record = {
        "id": "ü-1",
        "intent": "bank_fraud_report",
        "split": "test",
        "turns": [
            {"role": "customer", "text": "Quelqu'un a utilisé ma carte ! 💳 你好"},
            {"role": "agent", "text": "Could I get your full name, please?", "intent": "bank_fraud_report"},
            {"role": "customer", "text": "Zoë Ñúñez", "rating": 4},
            {
                "role": "tool",
                "query": "bank_fraud_report FullName=Zoë",
                "results": [{"id": "kb-17", "title": "", "text": "Report filed."}],
            },
            {"role": "agent", "text": "Your report has been submitted."},
        ],
        "outcome": {"satisfied": True, "completed": True},
    }
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    conversations = load_jsonl(source).conversations
    assert conversations[0].to_dict() == record
    again = tmp_path / "out.jsonl"
    write_jsonl(conversations, again)
    assert load_jsonl(again).conversations == conversations
    assert "你好" in again.read_text(encoding="utf-8")


def test_csv_groups_rows_by_conversation_in_order(tmp_path):
    path = tmp_path / "turns.csv"
    path.write_text(
        "conversation_id,role,text,intent,rating\n"
        "c1,customer,Hi,,\n"
        'c2,customer,"Hello, there",,\n'
        "c1,agent,Hello!,greet,\n"
        "c2,agent,Hey,,\n"
        "c1,customer,Thanks,,5\n",
        encoding="utf-8",
    )
    conversations = load_csv(path).conversations
    assert [c.id for c in conversations] == ["c1", "c2"]
    assert [(t.role, t.text, t.intent, t.rating) for t in conversations[0].turns] == [
        ("customer", "Hi", None, None),
        ("agent", "Hello!", "greet", None),
        ("customer", "Thanks", None, 5),
    ]
    assert conversations[1].turns[0].text == "Hello, there"


# (bad row on line 4, expected problem text, conversations kept with --skip-invalid)
BAD_CSV = [
    ("c2,customer,Hi,,9", "field 'rating': expected an integer from 1 to 5, got 9 (conversation 'c2' skipped)", ["c1"]),
    (
        "c2,customer,Hi,,great",
        "field 'rating': expected an integer from 1 to 5, got 'great' (conversation 'c2' skipped)",
        ["c1"],
    ),
    ("c2,,Hi,,", "field 'role': empty (expected a customer or agent role) (conversation 'c2' skipped)", ["c1"]),
    ("c2,agent,Hi,,4", "field 'rating': only customer turns carry a rating (conversation 'c2' skipped)", ["c1"]),
    ("c2,customer,,,", "field 'text': empty (expected non-empty text) (conversation 'c2' skipped)", ["c1"]),
    (",customer,Hi,,", "field 'conversation_id': empty (expected non-empty text)", ["c1", "c2"]),
    (
        "c2,tool,Hi,,",
        "field 'role': tool turns cannot be written in the CSV format: use JSON Lines (conversation 'c2' skipped)",
        ["c1"],
    ),
]


@pytest.mark.parametrize(("row", "expected", "kept"), BAD_CSV)
def test_bad_csv_row_names_file_line_and_field(tmp_path, row, expected, kept):
    path = tmp_path / "bad.csv"
    path.write_text(f"conversation_id,role,text,intent,rating\nc1,customer,Hi,,\nc1,agent,Yo,,\n{row}\nc2,agent,Ok,,\n")
    with pytest.raises(InvalidDataError) as err:
        load_csv(path)
    assert [str(p) for p in err.value.problems] == [f"{path}:4: {expected}"]
    assert [c.id for c in load_csv(path, skip_invalid=True).conversations] == kept


def test_csv_non_utf8_and_missing_agent(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"conversation_id,role,text\nc1,customer,caf\xe9\nc1,agent,Hi\nc3,customer,alone\nc4,customer,Hi\nc4,agent,Ok\n"
    )
    report = load_csv(path, skip_invalid=True)
    assert [str(p) for p in report.problems] == [
        f"{path}:2: field 'text': not valid UTF-8: byte 0xe9 at position 3 (conversation 'c1' skipped)",
        f"{path}:4: field 'turns': conversation 'c3' has no agent turn",
    ]
    assert [c.id for c in report.conversations] == ["c4"]


def test_csv_header_must_name_required_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,speaker,text\n1,customer,Hi\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: CSV header lacks column\(s\) conversation_id, role"):
        load_csv(path)


def test_load_conversations_dispatches_on_suffix(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the format of .*logs.txt"):
        load_conversations(tmp_path / "logs.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_conversations(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_conversations(tmp_path / "d.csv")


def test_knowledge_base_validation(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text('{"id": "k1", "text": "Open 9-5", "intent": "hours"}\n{"id": "k1", "text": "dup"}\n{"text": "x"}\n')
    with pytest.raises(InvalidDataError) as err:
        load_knowledge_base(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:2: field 'id': duplicate id 'k1' (first seen on line 1)",
        f"{path}:3: field 'id': missing (expected a string)",
    ]
    docs = load_knowledge_base(path, skip_invalid=True)
    assert [(d.id, d.intent) for d in docs] == [("k1", "hours")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no valid document"):
        load_knowledge_base(empty)
