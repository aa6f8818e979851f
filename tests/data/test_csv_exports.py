"""CSV exports in the shapes real help desks write: mapped columns and roles, timestamps, bursts, other roles."""

import json

import pytest

from csrl.data import (
    ColumnMapping,
    InvalidDataError,
    load_conversations,
    load_corpus,
    load_csv,
    parse_columns,
    parse_roles,
    parse_timestamp,
    read_mapping,
)


def _csv(tmp_path, text, name="export.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _turns(conversation):
    return [(t.role, t.text, t.intent, t.rating) for t in conversation.turns]


# (rows after the header "conversation_id,role,text,intent,rating", expected turns of c1, messages merged in all)
BURSTS = [
    (
        ["c1,customer,Hi,,", "c1,customer,my card is gone,,", "c1,agent,Sorry!,,", "c1,agent,Your name?,,"],
        [("customer", "Hi\nmy card is gone", None, None), ("agent", "Sorry!\nYour name?", None, None)],
        2,
    ),
    (  # the first intent and a rating on any message of the burst are kept
        ["c1,agent,Hello,greet,", "c1,agent,How can I help?,offer,", "c1,customer,ok,,", "c1,customer,thanks,,5"],
        [("agent", "Hello\nHow can I help?", "greet", None), ("customer", "ok\nthanks", None, 5)],
        2,
    ),
    (
        ["c1,customer,a,,", "c1,agent,b,,", "c1,customer,c,,", "c1,customer,d,,", "c1,customer,e,,", "c1,agent,f,,"],
        [
            ("customer", "a", None, None),
            ("agent", "b", None, None),
            ("customer", "c\nd\ne", None, None),
            ("agent", "f", None, None),
        ],
        2,
    ),  # fmt: skip
    (  # another conversation in between does not break a burst
        ["c1,customer,a,,", "c2,customer,x,,", "c1,customer,b,,", "c2,agent,y,,", "c1,agent,c,,"],
        [("customer", "a\nb", None, None), ("agent", "c", None, None)],
        1,
    ),
]


@pytest.mark.parametrize(("rows", "expected", "merged"), BURSTS)
def test_a_speakers_consecutive_messages_make_one_turn(tmp_path, rows, expected, merged):
    path = _csv(tmp_path, "conversation_id,role,text,intent,rating\n" + "\n".join(rows) + "\n")
    report = load_csv(path)
    assert _turns(report.conversations[0]) == expected
    assert report.merged_messages == merged


def test_bursts_stay_apart_when_merging_is_off(tmp_path):
    path = _csv(tmp_path, "conversation_id,role,text\nc1,customer,Hi\nc1,customer,there\nc1,agent,Hello\n")
    report = load_csv(path, mapping=ColumnMapping(merge_bursts=False))
    assert [t.text for t in report.conversations[0].turns] == ["Hi", "there", "Hello"]
    assert report.merged_messages == 0


def test_text_only_export_with_default_role_names(tmp_path):
    path = _csv(
        tmp_path,
        "conversation_id,role,text\n"
        "t1,User,My parcel is late\nt1,User,it was due Monday\nt1,Assistant,Let me check.\n"
        "t2,client,Hello\nt2, Support ,Hi! How can I help?\nt2,CUSTOMER,Refund please\n",
    )
    report = load_csv(path)
    assert [(c.id, [(t.role, t.text) for t in c.turns]) for c in report.conversations] == [
        ("t1", [("customer", "My parcel is late\nit was due Monday"), ("agent", "Let me check.")]),
        ("t2", [("customer", "Hello"), ("agent", "Hi! How can I help?"), ("customer", "Refund please")]),
    ]
    assert report.problems == [] and report.ignored == [] and report.merged_messages == 1


HELPDESK = (
    "ticket_id,author,body,created_at,channel\n"
    "T-2,support,We have refunded you.,2024-05-02T09:05:00Z,mail\n"
    "T-1,End-User,Where is my order?,2024-05-01T10:00:00+00:00,chat\n"
    "T-2,end-user,I was charged twice,2024-05-02T09:00:00Z,mail\n"
    "T-1,system,Ticket assigned to Sam,2024-05-01T10:00:30Z,chat\n"
    "T-1,support,It ships today.,1714557660,chat\n"
    "T-1,bot-note,customer is VIP,2024-05-01T10:02:00Z,chat\n"
    "T-1,end-user,Thanks!,2024-05-01T12:03:00+02:00,chat\n"
    "T-2,end-user,thank you,2024-05-02T09:06:00Z,mail\n"
)
HELPDESK_TURNS = {
    "T-2": [("customer", "I was charged twice"), ("agent", "We have refunded you."), ("customer", "thank you")],
    "T-1": [("customer", "Where is my order?"), ("agent", "It ships today."), ("customer", "Thanks!")],
}


def _helpdesk_mapping(tmp_path, how):
    if how == "strings":
        return ColumnMapping.from_strings(
            "conversation_id=ticket_id,role=author,text=body,timestamp=created_at", "customer=end-user,agent=support"
        )
    config = {
        "columns": {"conversation_id": "ticket_id", "role": "author", "text": "body", "timestamp": "created_at"},
        "roles": {"customer": ["end-user"], "agent": "support"},
    }
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return read_mapping(path) if how == "file" else ColumnMapping.from_file(path)


@pytest.mark.parametrize("how", ["strings", "file", "classmethod"])
def test_helpdesk_export_mapped_and_ordered_by_time(tmp_path, how):
    mapping = _helpdesk_mapping(tmp_path, how)
    path = _csv(tmp_path, HELPDESK)
    report = load_csv(path, mapping=mapping)
    assert {c.id: [(t.role, t.text) for t in c.turns] for c in report.conversations} == HELPDESK_TURNS
    assert [c.id for c in report.conversations] == ["T-2", "T-1"]  # order of first appearance
    # other roles are left out, counted and placed, and are not errors
    assert report.problems == []
    assert [(p.line, p.field) for p in report.ignored] == [(5, "author"), (7, "author")]
    assert report.ignored_reasons() == {
        "author: 'system' is neither a customer nor an agent role": 1,
        "author: 'bot-note' is neither a customer nor an agent role": 1,
    }


def test_equal_timestamps_keep_file_order(tmp_path):
    path = _csv(
        tmp_path,
        "conversation_id,role,text,timestamp\n"
        "c1,agent,second,100\nc1,agent,third,100\nc1,customer,first,99\nc1,customer,fourth,2000-01-01T00:00:00\n",
    )
    turns = load_csv(path, mapping=ColumnMapping(merge_bursts=False)).conversations[0].turns
    assert [t.text for t in turns] == ["first", "second", "third", "fourth"]


# (timestamp cell, expected problem after "export.csv:3: ")
BAD_TIMESTAMPS = [
    ("soon", "field 'timestamp': cannot read 'soon' as a time: expected ISO 8601 (2024-05-01T13:45:00Z) or Unix "
     "seconds (conversation 'c2' skipped)"),
    ("", "field 'timestamp': empty (expected ISO 8601 or Unix seconds) (conversation 'c2' skipped)"),
    ("2024-13-01", "field 'timestamp': cannot read '2024-13-01' as a time: expected ISO 8601 (2024-05-01T13:45:00Z) "
     "or Unix seconds (conversation 'c2' skipped)"),
]  # fmt: skip


@pytest.mark.parametrize(("cell", "expected"), BAD_TIMESTAMPS)
def test_unreadable_timestamp_is_a_problem_with_its_line(tmp_path, cell, expected):
    path = _csv(
        tmp_path,
        f"conversation_id,role,text,timestamp\nc1,customer,Hi,1\nc2,customer,Hi,{cell}\nc1,agent,Yo,2\nc2,agent,Ok,3\n",
    )
    with pytest.raises(InvalidDataError) as err:
        load_csv(path)
    assert [str(p) for p in err.value.problems] == [f"{path}:3: {expected}"]
    assert [c.id for c in load_csv(path, skip_invalid=True).conversations] == ["c1"]


PARSED_TIMES = [
    ("2024-05-01T13:45:00Z", 1714571100.0),
    ("2024-05-01T13:45:00.250+00:00", 1714571100.25),
    ("2024-05-01 15:45:00+02:00", 1714571100.0),
    ("2024-05-01T13:45:00", 1714571100.0),  # no zone: UTC
    (" 1714571100 ", 1714571100.0),
    ("1714571100.5", 1714571100.5),
    ("1714571100250", 1714571100.25),  # milliseconds
]


@pytest.mark.parametrize(("value", "expected"), PARSED_TIMES)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


ROLE_VALUES = [
    ("customer", "customer"), (" User ", "customer"), ("END_USER", "customer"), ("end user", "customer"),
    ("requester", "customer"), ("agent", "agent"), ("Assistant", "agent"), ("wizard", "agent"),
    ("support", "agent"), ("Chatbot", "agent"), ("system", None), ("bot-note", None), ("note", None),
]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), ROLE_VALUES)
def test_default_roles(value, expected):
    assert ColumnMapping().role_of(value) == expected


def test_given_roles_replace_that_sides_defaults_only():
    mapping = ColumnMapping.from_strings(roles="agent=user,agent=Helper")
    assert mapping.roles["agent"] == ("user", "helper")
    assert mapping.role_of("user") == "agent" and mapping.role_of("assistant") is None
    assert mapping.role_of("client") == "customer"  # the customer side keeps its defaults, less 'user'
    assert "user" not in mapping.roles["customer"]


# (callable, expected ValueError message pattern)
BAD_MAPPINGS = [
    (lambda: parse_columns("speaker=author"), r"unknown column 'speaker' in 'speaker=author': expected one of "
     r"conversation_id, role, text, intent, rating, timestamp"),
    (lambda: parse_columns("text"), r"cannot read 'text' in the column mapping 'text': expected NAME=VALUE"),
    (lambda: parse_columns("text=body,text=msg"), r"column 'text' is mapped twice .*'body' and 'msg'"),
    (lambda: parse_columns("text="), r"expected NAME=VALUE, e.g. conversation_id=ticket_id"),
    (lambda: parse_roles("bot=assistant"), r"unknown role 'bot' in 'bot=assistant': expected customer or agent"),
    (lambda: parse_roles("customer=user,agent=USER"), r"'user' given to both customer and agent"),
    (lambda: ColumnMapping({"speaker": "author"}), r"unknown column\(s\) 'speaker'"),
    (lambda: ColumnMapping(roles={"tool": ["api"]}), r"unknown role 'tool': expected customer or agent"),
    (lambda: ColumnMapping(roles={"agent": []}), r"role 'agent' needs non-empty text values"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "pattern"), BAD_MAPPINGS)
def test_bad_mappings_say_what_to_fix(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ('{"colums": {}}', r"unknown key\(s\) colums: expected columns, roles, merge_bursts"),
        ("[1]", r"expected a JSON object"),
        ("{nope", r"not a JSON mapping file"),
        ('{"merge_bursts": "no"}', r"merge_bursts must be true or false, got 'no'"),
        ('{"roles": {"customer": "user", "agent": ["user"]}}', r"role value\(s\) 'user' given to both customer"),
    ],
)
def test_bad_mapping_file(tmp_path, config, pattern):
    path = tmp_path / "mapping.json"
    path.write_text(config, encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path}: " + pattern):
        read_mapping(path)


def test_mapped_column_missing_from_header_names_column_header_and_fix(tmp_path):
    path = _csv(tmp_path, "ticket_id,author,body\nT1,end-user,Hi\n")
    mapping = ColumnMapping.from_strings("conversation_id=ticket_id,role=author,text=message")
    with pytest.raises(ValueError) as err:
        load_csv(path, mapping=mapping)
    assert str(err.value) == (
        f"{path}:1: column 'message' (mapped to text) is not in the header: ticket_id, author, body; "
        "fix the mapping, e.g. text=<one of those columns>"
    )
    with pytest.raises(ValueError) as err:
        load_csv(path)
    assert str(err.value) == (
        f"{path}:1: CSV header lacks column(s) conversation_id, role, text; expected conversation_id, role, "
        "text[, intent, rating, timestamp], got ticket_id, author, body; or map yours, e.g. --columns "
        "conversation_id=ticket_id,role=author,text=body"
    )


def test_header_names_match_whatever_their_case(tmp_path):
    path = _csv(tmp_path, " Ticket ID ,Author,Body\nT1,end-user,Hi\nT1,agent,Hello\n")
    mapping = ColumnMapping.from_strings("conversation_id=ticket id,role=author,text=body")
    assert [t.text for t in load_csv(path, mapping=mapping).conversations[0].turns] == ["Hi", "Hello"]


def test_mapping_flows_through_load_corpus_and_stats(tmp_path):
    path = _csv(tmp_path, HELPDESK)
    mapping = _helpdesk_mapping(tmp_path, "strings")
    assert len(load_conversations(path, mapping=mapping).conversations) == 2
    stats = load_corpus(path, mapping=mapping).stats()
    assert stats["conversations"] == 2 and stats["turns_by_role"] == {"customer": 4, "agent": 2, "tool": 0}
    assert stats["ignored"]["count"] == 2 and stats["merged_messages"] == 0
    jsonl = tmp_path / "logs.jsonl"
    jsonl.write_text("")
    with pytest.raises(ValueError, match="a column mapping applies to CSV logs only"):
        load_conversations(jsonl, mapping=mapping)
