"""The hybrid retriever: calibrated BM25 + dense relevance, search, recall on logged lookups, save/load."""

import numpy as np
import pytest
from support import BANK, KB, RESTAURANTS, WEATHER, kb_conversations, text_only_conversations

from csrl.data.schema import Conversation, Turn
from csrl.rewards.search.retriever import Calibration, HybridRetriever, logged_searches, retrieval_recall


@pytest.fixture(scope="module")
def retriever(encoder):
    return HybridRetriever(KB, encoder, candidates=5)


# -- calibration ------------------------------------------------------------------------------


def test_calibration_in_unit_interval_and_monotone():
    cal = Calibration()
    grid = np.linspace(0, 1, 11)
    ratio, cosine = np.meshgrid(grid, np.linspace(-1, 1, 11))
    values = cal(ratio, cosine)
    assert values.min() >= 0 and values.max() <= 1
    assert (np.diff(values, axis=0) >= 0).all() and (np.diff(values, axis=1) >= 0).all()
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="weights must be >= 0"):
        Calibration(w_bm25=-1.0)


def test_fit_calibration_gives_positive_weights(encoder):
    fitted = HybridRetriever(KB, encoder)
    cal = fitted.fit_calibration(kb_conversations(), negatives=3)
    assert cal.n_fit > 0 and cal.w_bm25 + cal.w_cosine > 0
    relevant = fitted.relevance(["weather Day=Friday City=Boston"], [KB[3]])[0]
    unrelated = fitted.relevance(["weather Day=Friday City=Boston"], [BANK[1]])[0]
    assert relevant > 0.5 > unrelated


def test_fit_calibration_needs_tool_turns(retriever):
    no_tools = [Conversation("x", (Turn("customer", "hi"), Turn("agent", "hello")))]
    with pytest.raises(ValueError, match="no logged tool turn with results in the KB"):
        retriever.fit_calibration(no_tools)


# -- search -----------------------------------------------------------------------------------


def test_search_is_a_searcher(retriever):
    hits = retriever.search(["weather Day=Friday City=Boston", "japanese restaurant"], k=3)
    assert [len(h) for h in hits] == [3, 3]
    assert hits[0][0][0].id == "w-Boston-Friday"
    assert hits[1][0][0].id == "r-Ginza"
    for row in hits:
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert len(retriever.search(["weather"], k=100)[0]) == len(KB)  # k clipped to the KB


def test_relevance_pairs_accept_texts_outside_the_kb(retriever):
    values = retriever.relevance(["weather in Boston on Friday"] * 3, [KB[3], "Boston, Friday: rain all day.", BANK[2]])
    assert values.shape == (3,) and values[0] > values[2] and values[1] > values[2]
    in_kb = retriever.relevance(["japanese restaurant"], [RESTAURANTS[1]])
    np.testing.assert_allclose(
        in_kb, retriever.relevance_matrix(["japanese restaurant"])[:, len(WEATHER) + 1], rtol=1e-5
    )


def test_recall_on_logged_tool_turns(retriever):
    searches = logged_searches(kb_conversations(), retriever.id_to_index)
    assert len(searches) == 4
    recall = retrieval_recall(retriever, kb_conversations(), ks=(1, 3))
    assert recall["n"] == 4 and recall["recall@3"] == 1.0 and recall["recall_equivalent@3"] == 1.0
    assert recall["recall@1"] >= 0.75


def test_save_load_round_trip_without_reencoding(retriever, encoder, tmp_path):
    retriever.save(tmp_path)

    class NoEncoding:
        """Refuses to embed the KB again; queries go to the real encoder."""

        name = encoder.name

        def encode(self, texts):
            assert len(texts) < len(KB), "load must not re-embed the knowledge base"
            return encoder.encode(texts)

    loaded = HybridRetriever.load(tmp_path, KB, NoEncoding())
    assert loaded.calibration == retriever.calibration
    np.testing.assert_array_equal(loaded.dense.vectors, retriever.dense.vectors)
    queries = ["weather Day=Monday City=Denver", "report fraud"]
    for a, b in zip(loaded.search_indices(queries, 4), retriever.search_indices(queries, 4), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="built for another knowledge base"):
        HybridRetriever.load(tmp_path, KB[:-1], encoder)
    with pytest.raises(FileNotFoundError, match="no saved retriever in"):
        HybridRetriever.load(tmp_path / "missing", KB, encoder)


@pytest.mark.parametrize(
    ("documents", "error", "message"),
    [
        ([], ValueError, "empty knowledge base: pass at least one KBDocument"),
        (KB[0], TypeError, "got a single one; wrap it in a list"),
        (["a text"], TypeError, r"documents\[0\] must be a KBDocument, got str"),
        ([KB[0], KB[0]], ValueError, "document ids must be unique"),
    ],
)
def test_retriever_guards(encoder, documents, error, message):
    with pytest.raises(error, match=message):
        HybridRetriever(documents, encoder)


def test_retriever_call_guards(retriever):
    with pytest.raises(TypeError, match="queries must be a list of strings"):
        retriever.search("weather", k=1)
    with pytest.raises(ValueError, match="k=0"):
        retriever.search(["weather"], k=0)
    with pytest.raises(ValueError, match="one document per query, got 2 and 1"):
        retriever.relevance(["a", "b"], [KB[0]])


def test_empty_query_batches(retriever):
    assert retriever.search([], k=3) == []
    assert retriever.relevance_matrix([]).shape == (0, len(KB))
    assert retriever.search([""], k=2)[0][0][1] >= 0  # a query without words still returns documents


# -- logs without logged lookups ----------------------------------------------------------------


def test_answers_the_kb_supports_stand_in_for_lookups(encoder):
    import dataclasses

    from csrl.rewards.search.retriever import answer_supported_searches

    no_intents = [dataclasses.replace(d, intent=None) for d in KB]  # a user's KB: no intents to pick negatives by
    retriever = HybridRetriever(no_intents, encoder, candidates=5)
    searches = answer_supported_searches(text_only_conversations(), retriever, min_relevance=0.3)
    found = {query: retriever.documents[next(iter(relevant))].id for query, relevant in searches}
    assert found["Someone stole my card"] == "b-fraud"
    assert found["Will it rain in Boston on Friday?"].startswith("w-Boston")
    needs = answer_supported_searches(text_only_conversations(), retriever, as_need=True, min_relevance=0.3)
    assert [q for q, _ in needs] == [q for q, _ in searches]  # one customer message each: need = last message
    calibration = retriever.fit_calibration([], searches=searches, negatives=3)
    assert calibration.n_fit > len(searches) and calibration.w_bm25 + calibration.w_cosine > 0
    recall = retrieval_recall(retriever, [], ks=(1, 5), searches=searches)
    assert recall["n"] == len(searches) and 0 <= recall["recall@1"] <= recall["recall@5"] <= 1
    assert answer_supported_searches([], retriever) == []
