"""Logs ingested into an on-disk Arrow folder: the same conversations back, splits as load_corpus gives them."""

import json

import pytest

from csrl.data import InvalidDataError, load_corpus, write_jsonl
from csrl.data.ingest import ingest, iter_conversations, open_ingested


@pytest.fixture(scope="module")
def star_sample(star_corpus, tmp_path_factory):
    """200 STAR conversations (tool turns with KB results, intents, logged splits) without their splits."""
    import dataclasses

    conversations = [dataclasses.replace(c, split=None) for c in star_corpus.conversations[:200]]
    path = tmp_path_factory.mktemp("logs") / "star.jsonl"
    write_jsonl(conversations, path)
    return path, conversations


def test_ingest_round_trips_every_field_in_batches(star_sample, tmp_path):
    path, conversations = star_sample
    report = ingest(path, tmp_path / "logs.arrow", seed=3, batch_size=7)  # 200 rows: 28 full batches and a part
    assert (report.conversations, report.turns) == (200, sum(len(c.turns) for c in conversations))
    back = list(iter_conversations(tmp_path / "logs.arrow"))
    assert [c.id for c in back] == [c.id for c in conversations]
    from_file = load_corpus(path, seed=3).conversations  # the splits load_corpus gives the same logs
    assert back == from_file  # turns, tool results, intents, ratings, splits: all equal
    assert any(t.results for c in back for t in c.turns) and {c.split for c in back} == {"train", "validation", "test"}
    assert load_corpus(tmp_path / "logs.arrow").conversations == back  # --data FOLDER reads it
    assert len(open_ingested(tmp_path / "logs.arrow")) == 200
    summary = json.loads((tmp_path / "logs.arrow" / "ingest.json").read_text())
    assert summary["conversations"] == 200 and summary["skipped_records"] == 0


def test_ingest_a_csv_export(tmp_path):
    path = tmp_path / "turns.csv"
    path.write_text("conversation_id,role,text\nc1,customer,Hi\nc2,customer,Yo\nc1,agent,Hello!\nc2,agent,Hey\n")
    ingest(path, tmp_path / "out")
    assert [[t.text for t in c.turns] for c in iter_conversations(tmp_path / "out")] == [
        ["Hi", "Hello!"],
        ["Yo", "Hey"],
    ]


def test_invalid_records_fail_without_writing_or_are_skipped_and_counted(tmp_path):
    path = tmp_path / "logs.jsonl"
    good = {"id": "a", "turns": [{"role": "customer", "text": "Hi"}, {"role": "agent", "text": "Hello"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "turns": []}) + "\n")
    with pytest.raises(InvalidDataError, match=r"logs.jsonl:2: field 'turns': expected a non-empty list"):
        ingest(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.jsonl"]  # no folder, no partial left behind
    report = ingest(path, tmp_path / "out", skip_invalid=True)
    assert report.conversations == 1 and len(report.problems) == 1
    assert [c.id for c in iter_conversations(tmp_path / "out")] == ["a"]


def test_an_existing_folder_is_never_overwritten(star_sample, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists: choose another --out"):
        ingest(star_sample[0], tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_folder_that_was_not_ingested_is_named(tmp_path):
    for read in (open_ingested, lambda path: next(iter_conversations(path))):
        with pytest.raises(FileNotFoundError, match="is not an ingested folder: expected conversations.arrow"):
            read(tmp_path)
