import math

import numpy as np
import pytest

from csrl.rewards.search.bm25 import BM25Index, lucene_idf, normalize_by_best, tokenize

CORPUS = ["the cat sat", "a dog barked at the cat", "stock prices fell"]


def lucene_score(query: str, doc: str, corpus: list[str], k1: float = 1.5, b: float = 0.75) -> float:
    """Hand BM25 (Lucene variant) in float64, straight from the formula."""
    docs = [tokenize(d) for d in corpus]
    avgdl = sum(map(len, docs)) / len(docs)
    words = tokenize(doc)
    total = 0.0
    for term in dict.fromkeys(tokenize(query)):
        df = sum(term in d for d in docs)
        tf = words.count(term)
        if df and tf:
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(words) / avgdl))
    return total


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("StartTimeHour=7 pm", ["start", "time", "hour", "7", "pm"]),
        ("apartment_schedule", ["apartment", "schedule"]),
        ("Crème brûlée", ["crème", "brûlée"]),
        ("", []),
        ("  ...  ", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_exact_scores_small_corpus():
    index = BM25Index(CORPUS)
    scores = index.scores(["dog", "the cat"])
    for q, query in enumerate(["dog", "the cat"]):
        expected = [lucene_score(query, doc, CORPUS) for doc in CORPUS]
        np.testing.assert_allclose(scores[q], expected, rtol=1e-5)
    assert scores[0, 1] == pytest.approx(math.log(1 + 2.5 / 1.5) / (1 + 1.5 * (0.25 + 0.75 * 6 / 4)), rel=1e-5)


def test_two_document_corpus_ranks_sensibly():
    # Okapi idf would be ln((2-1+.5)/(1+.5)) = 0 here; Lucene idf keeps a term in one of two docs informative.
    index = BM25Index(["red apple", "green apple"])
    red = index.scores(["red"])[0]
    assert red[0] == pytest.approx(math.log(2) / 2.5, rel=1e-5)
    assert red[1] == 0
    apple = index.scores(["apple"])[0]
    assert apple[0] == apple[1] == pytest.approx(math.log(1.2) / 2.5, rel=1e-5)
    assert index.search(["green apple"], k=2)[0].tolist() == [[1, 0]]
    assert lucene_idf(1, 2) == pytest.approx(math.log(2))


def test_one_document_corpus():
    index = BM25Index(["only one document"])
    assert index.search(["document"], k=5)[0].tolist() == [[0]]
    assert index.scores(["document"])[0, 0] > 0


def test_search_sorted_clipped_and_tie_order():
    index = BM25Index(CORPUS)
    indices, scores = index.search(["cat", "prices", "unknownword"], k=10)
    assert indices.shape == scores.shape == (3, 3)  # k clipped to the corpus size
    assert indices[1, 0] == 2
    assert (np.diff(scores, axis=1) <= 0).all()
    assert indices[2].tolist() == [0, 1, 2] and (scores[2] == 0).all()  # no known word: all zero, index order


def test_query_terms_count_once():
    index = BM25Index(CORPUS)
    np.testing.assert_array_equal(index.scores(["dog dog dog"]), index.scores(["dog"]))


def test_score_pairs_match_corpus_scores_and_score_new_texts():
    index = BM25Index(CORPUS)
    full = index.scores(["the cat"])[0]
    pairs = index.score_pairs(["the cat"] * 3, CORPUS)
    np.testing.assert_allclose(pairs, full, rtol=1e-5)
    reply = "your cat sat with the other cat"
    assert index.score_pairs(["cat"], [reply])[0] == pytest.approx(lucene_score("cat", reply, CORPUS), rel=1e-5)
    assert index.score_pairs(["zebra"], [reply])[0] == 0.0


def test_normalized_pairs_in_unit_interval():
    index = BM25Index(CORPUS)
    values = index.normalized_pairs(["cat"] * 4, CORPUS + ["cat cat cat cat"])
    assert values.min() >= 0 and values.max() <= 1
    assert values[3] == 1.0  # a text beating every document is capped at 1
    assert index.normalized_pairs(["zebra"], ["zebra"])[0] == 0.0  # no known word
    assert normalize_by_best(np.array([3.0]), np.array([2.0])).tolist() == [1.0]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: BM25Index([]), ValueError, "empty corpus: pass at least one document text"),
        (lambda: BM25Index("the cat sat"), TypeError, r"got a single str; wrap it in a list: \[text\]"),
        (lambda: BM25Index(["ok", 3]), TypeError, r"BM25Index texts\[1\] must be a str, got int"),
        (lambda: BM25Index(["", "..."]), ValueError, "no document contains a word token"),
        (lambda: BM25Index(["a"], b=2), ValueError, "0 <= b <= 1"),
        (lambda: BM25Index(CORPUS).search("cat", k=1), TypeError, "queries must be a list of strings"),
        (lambda: BM25Index(CORPUS).search(["cat"], k=0), ValueError, "k=0: ask for at least 1 result"),
        (lambda: BM25Index(CORPUS).search(["cat"], k=2.5), TypeError, "k must be an int, got float"),
        (lambda: BM25Index(CORPUS).score_pairs(["cat"], ["a", "b"]), ValueError, "one text per query, got 1"),
        (lambda: tokenize(None), TypeError, "tokenize\\(\\) takes a str, got NoneType"),
    ],
)
def test_guards(call, error, message):
    with pytest.raises(error, match=message):
        call()
