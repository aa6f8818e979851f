"""Knowledge bases from help-centre exports: CSV, a folder of Markdown / text files (chunked), JSON Lines."""

import importlib.util
from pathlib import Path

import pytest

from csrl.data import InvalidDataError, KBDocument, LoadReport, chunk_markdown, load_knowledge_base, read_knowledge_base
from csrl.data.knowledge import content_id, split_paragraphs

ROOT = Path(__file__).resolve().parents[2]
GUIDELINES = ROOT.parent / "shared/data/abcd/guidelines.json"


def test_kb_from_csv_with_and_without_ids(tmp_path):
    path = tmp_path / "kb.csv"
    path.write_text(
        "Title,text,intent\n"
        "Opening hours,We are open 9-5.,hours\n"
        'Refunds,"Refunds take 5 days.\n\nAsk support.",\n'
        "Opening hours,We are open 9-5.,\n"
        "Empty,,\n",
        encoding="utf-8",
    )
    report = read_knowledge_base(path)
    refund = "Refunds take 5 days.\n\nAsk support."
    assert report.documents == [
        KBDocument(content_id("Opening hours", "We are open 9-5."), "We are open 9-5.", "Opening hours", "hours"),
        KBDocument(content_id("Refunds", refund), refund, "Refunds"),
    ]
    first = report.documents[0].id
    assert [str(p) for p in report.problems] == [
        f"{path}:6: field 'id': duplicate id {first!r} (same title and text as first seen on line 2)",
        f"{path}:7: field 'text': empty (expected non-empty text)",
    ]
    with_ids = tmp_path / "ids.csv"
    with_ids.write_text("id,title,text\nk1,Hours,Open 9-5\nk1,Hours,again\n,Blank id,Gets a hash\n", encoding="utf-8")
    report = read_knowledge_base(with_ids)
    assert [d.id for d in report.documents] == ["k1", content_id("Blank id", "Gets a hash")]
    assert [str(p) for p in report.problems] == [f"{with_ids}:3: field 'id': duplicate id 'k1' (first seen on line 2)"]
    no_text = tmp_path / "bad.csv"
    no_text.write_text("id,title,body\n1,a,b\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: CSV header lacks column text; expected \[id,\] \[title,\] text"):
        read_knowledge_base(no_text)


def _guidelines_folder(folder: Path) -> dict:
    """ABCD's agent guidelines as a help centre, written by the bench script users run."""
    spec = importlib.util.spec_from_file_location("strip_star", ROOT / "bench" / "strip_star.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    guidelines = module.write_help_centre(folder, GUIDELINES)
    (folder / "LICENSE-abcd").unlink()  # the attribution copy (no document suffix, so the KB reader skips it)
    return guidelines


@pytest.mark.skipif(not GUIDELINES.exists(), reason="needs ../shared/data/abcd/guidelines.json")
def test_kb_from_a_folder_of_markdown_pages(tmp_path):
    guidelines = _guidelines_folder(tmp_path)
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "empty.md").write_text("  \n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG")
    report = read_knowledge_base(tmp_path)
    assert isinstance(report, LoadReport) and report.problems == []
    docs = {d.id: d for d in report.documents}
    refund = [d for d in report.documents if d.id.startswith("product-defect.md#")]
    assert [d.title for d in refund[:4]] == [
        "Product Defect",
        "Product Defect > Initiate Refund",
        "Product Defect > Initiate Refund > Pull up Account",
        "Product Defect > Initiate Refund > Validate Purchase",
    ]
    assert [d.id for d in refund[:3]] == ["product-defect.md#0", "product-defect.md#1", "product-defect.md#2"]
    assert docs["product-defect.md#0"].text == "refunds and returns"
    assert docs["product-defect.md#3"].text.startswith(
        "To confirm that their purchase is valid with [Validate Purchase]"
    )
    assert docs["product-defect.md#3"].text.endswith("- Order ID - last item, to be consistent with verify identity")
    # one chunk per flow description, subflow instructions and action (none is over the size limit)
    expected = sum(1 + sum(1 + len(s["actions"]) for s in f["subflows"].values()) for f in guidelines.values())
    assert len(report.documents) == expected == 10 + 55 + 255
    assert max(len(d.text) for d in report.documents) <= 1000
    assert [str(p) for p in report.ignored] == [
        f"{tmp_path / 'drafts' / 'empty.md'}:1: empty file (no document)",
        f"{tmp_path / 'logo.png'}:1: not a Markdown or text file (skipped; read: .md, .markdown, .txt)",
    ]
    assert read_knowledge_base(tmp_path).documents == report.documents  # stable ids and chunks
    with pytest.warns(UserWarning, match="left out 2 file"):
        assert load_knowledge_base(tmp_path) == report.documents


def test_long_sections_split_at_paragraphs(tmp_path):
    paragraph = "A refund goes back to the card you paid with. " * 9  # 413 characters once stripped
    sentences = "Step one is short. " * 80  # one paragraph of 1,519 characters: cut after the 52nd sentence
    page = (
        f"---\ntitle: Refund policy\nintent: get_refund\n---\n# Refunds (old title)\n\n{paragraph}\n\n{paragraph}\n\n"
    )
    page += f"{paragraph}\n\n## Steps\n{sentences}\n\n```\n# not a heading\n```\n#### Deep heading stays\nEnd.\n"
    (tmp_path / "help").mkdir()
    (tmp_path / "help" / "refunds.md").write_text(page, encoding="utf-8")
    (tmp_path / "help" / "notes.txt").write_text("# Plain text\n\nSecond paragraph.\n", encoding="utf-8")
    docs = load_knowledge_base(tmp_path)
    assert [(d.id, d.title, len(d.text)) for d in docs] == [
        ("help/notes.txt#0", "notes", 12 + 2 + 17),
        ("help/refunds.md#0", "Refund policy > Refunds (old title)", 2 * 413 + 2),
        ("help/refunds.md#1", "Refund policy > Refunds (old title)", 413),
        ("help/refunds.md#2", "Refund policy > Refunds (old title) > Steps", 52 * 18 + 51),
        ("help/refunds.md#3", "Refund policy > Refunds (old title) > Steps", 28 * 18 + 27 + 2 + 52),
    ]
    assert all(d.intent == "get_refund" for d in docs[1:]) and docs[0].intent is None
    assert docs[4].text.endswith("```\n# not a heading\n```\n#### Deep heading stays\nEnd.")
    single = read_knowledge_base(tmp_path / "help" / "notes.txt")
    assert [(d.id, d.text) for d in single.documents] == [("notes.txt#0", "# Plain text\n\nSecond paragraph.")]


CHUNKS = [
    ("just text", [("T", "just text")]),
    ("# T\n", []),
    ("intro\n# T\nbody\n## A #\nx\n### B\ny\n## C\nz", [("T", "intro"), ("T", "body"), ("T > A", "x"),
                                                       ("T > A > B", "y"), ("T > C", "z")]),
    ("# Other\n#hashtag\n##not\n", [("T > Other", "#hashtag\n##not")]),
    ("### Deep first\nx\n# Top\ny", [("T > Deep first", "x"), ("T > Top", "y")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CHUNKS)
def test_chunk_markdown(text, expected):
    assert chunk_markdown(text, "T") == expected


def test_split_paragraphs_never_exceeds_the_limit():
    text = "word " * 500 + "\n\n" + "x" * 2500
    pieces = split_paragraphs(text, max_chars=300)
    assert max(map(len, pieces)) <= 300 and "".join(pieces).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    with pytest.raises(ValueError, match="max_chars must be at least 1"):
        split_paragraphs("x", max_chars=0)


def test_folder_errors_are_problems_and_an_empty_kb_fails(tmp_path):
    (tmp_path / "bad.md").write_bytes(b"# Title\nok\ncaf\xe9\n")
    (tmp_path / "empty.txt").write_text("")
    report = read_knowledge_base(tmp_path)
    assert [str(p) for p in report.problems] == [
        f"{tmp_path / 'bad.md'}:3: not valid UTF-8: byte 0xe9 at position 3 (file skipped)"
    ]
    with pytest.raises(InvalidDataError):
        load_knowledge_base(tmp_path)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="holds no valid document"):
        load_knowledge_base(tmp_path, skip_invalid=True)
