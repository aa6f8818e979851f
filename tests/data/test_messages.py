"""Plain lists of customer messages (for intent discovery): CSV with id,text or a text file, a message a line."""

import pytest

from csrl.data import InvalidDataError, load_messages, parse_columns
from csrl.data.loaders import MESSAGE_COLUMNS

# (file name, bytes, columns, expected (ids, texts))
GOOD = [
    ("m.csv", b"id,text\nq1,Where is my parcel?\nq2, I need a refund \n", None,
     (["q1", "q2"], ["Where is my parcel?", "I need a refund"])),
    # no id column: the row's line number (where it ends, as in problems)
    ("m.csv", b"text,channel\nHello,chat\n\"Two\nlines\",mail\n", None, (["2", "4"], ["Hello", "Two\nlines"])),
    ("m.csv", b"\xef\xbb\xbfTicket,Body\nT9,caf\xc3\xa9 cr\xc3\xa8me\n", {"id": "ticket", "text": "body"},
     (["T9"], ["café crème"])),
    ("m.txt", b"\xef\xbb\xbfmy card was stolen\n\n  reset my password  \r\n\xe4\xbd\xa0\xe5\xa5\xbd\n", None,
     (["1", "3", "4"], ["my card was stolen", "reset my password", "你好"])),
    ("m.txt.gz", None, None, (["1", "2"], ["one", "two"])),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "columns", "expected"), GOOD, ids=[f"{g[0]}-{i}" for i, g in enumerate(GOOD)])
def test_load_messages(tmp_path, name, data, columns, expected):
    path = tmp_path / name
    if data is None:
        import gzip

        path.write_bytes(gzip.compress(b"one\ntwo\n"))
    else:
        path.write_bytes(data)
    assert load_messages(path, columns=columns) == expected


# (file name, bytes, expected problems after "PATH:")
BAD = [
    ("m.csv", b"id,text\nq1,Hi\nq1,again\nq3,  \n", ["3: field 'id': duplicate id 'q1' (first seen on line 2)",
                                                     "4: field 'text': empty (expected non-empty text)"]),
    ("m.csv", b"id,text\nq1,caf\xe9\n,Hi\nq3,ok\n", ["2: field 'text': not valid UTF-8: byte 0xe9 at position 3",
                                                   "3: field 'id': empty (expected non-empty text)"]),
    ("m.txt", b"fine\ncaf\xe9\nok\n", ["2: not valid UTF-8: byte 0xe9 at position 3"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "expected"), BAD)
def test_bad_messages_are_reported_with_their_line(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InvalidDataError) as err:
        load_messages(path)
    assert [str(p) for p in err.value.problems] == [f"{path}:{e}" for e in expected]
    with pytest.warns(UserWarning, match=f"skipped {len(expected)} invalid message"):
        ids, texts = load_messages(path, skip_invalid=True)
    assert len(ids) == len(texts) >= 1


def test_message_list_errors(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("id,body\n1,Hi\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"m.csv:1: CSV header lacks column text; expected \[id,\] text, got id, body"):
        load_messages(csv_path)
    with pytest.raises(ValueError, match=r"column 'msg' \(mapped to text\) is not in the header: id, body"):
        load_messages(csv_path, columns=parse_columns("text=msg", allowed=MESSAGE_COLUMNS))
    assert load_messages(csv_path, columns={"text": "body"}) == (["1"], ["Hi"])
    with pytest.raises(ValueError, match="unknown column 'role'"):
        parse_columns("role=author", allowed=MESSAGE_COLUMNS)
    other = tmp_path / "m.jsonl"
    other.write_text("{}\n")
    with pytest.raises(
        ValueError, match=r"cannot tell the format of .*m.jsonl: expected a .csv \(id, text\) or a .txt"
    ):
        load_messages(other)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no message"):
        load_messages(blank)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_messages(tmp_path / "missing.txt")
