import dataclasses

import numpy as np
import pytest

from csrl.data.schema import Conversation, KBDocument, Turn
from csrl.rewards.context import TurnContext
from csrl.rewards.retrieval import RetrievalReward
from csrl.rewards.search.dense_index import DenseIndex
from csrl.rewards.search.retriever import (
    Calibration,
    HybridRetriever,
    document_text,
    logged_searches,
    retrieval_recall,
)

CITIES = ["Pittsburgh", "Boston", "Denver", "Seattle"]
DAYS = ["Monday", "Friday"]
WEATHER = [
    KBDocument(f"w-{c}-{d}", f"weather result. City: {c}; Day: {d}; Weather: {w}.", "weather record", "weather")
    for c in CITIES
    for d, w in zip(DAYS, ["Sunny", "Raining"], strict=True)
]
RESTAURANTS = [
    KBDocument(
        f"r-{n}", f"restaurant result. Name: {n}; Food: {f}; Price: {p}.", "restaurant record", "restaurant_search"
    )
    for n, f, p in [
        ("The Porch", "American", "cheap"),
        ("Ginza", "Japanese", "expensive"),
        ("Casbah", "Mediterranean", "moderate"),
        ("Pho Van", "Vietnamese", "cheap"),
    ]
]
BANK = [
    KBDocument(
        "b-fraud",
        "To report fraud we block the card and open a case; ask for the full name and account number.",
        "bank_fraud_report procedure",
        "bank_fraud_report",
    ),
    KBDocument(
        "b-balance",
        "To check a balance, ask for the account number and PIN, then read the balance.",
        "bank_balance procedure",
        "bank_balance",
    ),
    KBDocument("b-ask-name", "Could I get your full name, please?", "bank_fraud_report: ask_name", "bank_fraud_report"),
]
KB = WEATHER + RESTAURANTS + BANK


def tool(query, *docs):
    return Turn(role="tool", query=query, results=tuple(docs))


def conversations():
    return [
        Conversation(
            "c1",
            (
                Turn("customer", "What's the weather in Boston on Friday?"),
                tool("weather Day=Friday City=Boston", KB[3]),
                Turn("agent", "It will be raining in Boston on Friday.", intent="weather"),
            ),
        ),
        Conversation(
            "c2",
            (
                Turn("customer", "Find me a cheap Japanese place"),
                tool("restaurant_search Food=Japanese", RESTAURANTS[1]),
                Turn("agent", "Ginza serves Japanese food.", intent="restaurant_search"),
            ),
        ),
        Conversation(
            "c3",
            (
                Turn("customer", "Someone stole my card, I need to report fraud"),
                tool("bank_fraud_report", BANK[0]),
                Turn("agent", "Could I get your full name, please?", intent="bank_fraud_report"),
            ),
        ),
        Conversation(
            "c4",
            (
                Turn("customer", "Is it sunny in Denver on Monday?"),
                tool("weather Day=Monday City=Denver", KB[4]),
                Turn("agent", "Yes, sunny in Denver on Monday.", intent="weather"),
            ),
        ),
    ]


@pytest.fixture(scope="module")
def retriever(encoder):
    return HybridRetriever(KB, encoder, candidates=5)


# -- dense index ------------------------------------------------------------------------------


def test_dense_flat_search_matches_brute_force_on_real_embeddings(encoder):
    vectors = encoder.encode([document_text(d) for d in KB])
    queries = encoder.encode(["will it rain in Seattle on Friday", "cheap vietnamese noodles", "my card was stolen"])
    index = DenseIndex(vectors)
    indices, scores = index.search(queries, k=3)
    brute = queries @ vectors.T
    np.testing.assert_array_equal(indices, np.argsort(-brute, axis=1)[:, :3])
    np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    assert KB[indices[1, 0]].id == "r-Pho Van"
    assert KB[indices[2, 0]].id == "b-fraud"
    hnsw = DenseIndex(vectors, kind="hnsw")
    assert hnsw.search(queries, k=1)[0].tolist() == indices[:, :1].tolist()  # exact on a KB this small


def test_dense_save_load_round_trip(encoder, tmp_path):
    vectors = encoder.encode([d.text for d in KB[:6]])
    for kind in ("flat", "hnsw"):
        index = DenseIndex(vectors, kind=kind)
        index.save(tmp_path / kind)
        loaded = DenseIndex.load(tmp_path / kind)
        assert loaded.kind == kind and len(loaded) == 6
        np.testing.assert_array_equal(loaded.vectors, vectors)
        for a, b in zip(index.search(vectors, 4), loaded.search(vectors, 4), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: DenseIndex(np.zeros((0, 4))), ValueError, "empty corpus: pass at least one document vector"),
        (lambda: DenseIndex(np.ones(4)), ValueError, r"must be 2-D \(n, dim\), got shape \(4,\)"),
        (lambda: DenseIndex("vectors"), TypeError, "2-D float array of embeddings, got a str"),
        (lambda: DenseIndex(np.ones((2, 4)), kind="ivf"), ValueError, "kind='ivf': expected one of"),
        (lambda: DenseIndex(np.full((2, 4), np.nan)), ValueError, "NaN or infinite"),
        (
            lambda: DenseIndex(np.eye(4)).search(np.ones((1, 3)), 1),
            ValueError,
            "have dimension 3, the index holds dimension 4: same encoder",
        ),
        (lambda: DenseIndex(np.eye(4)).search(np.ones((1, 4)), 0), ValueError, "k=0: ask for at least 1"),
        (lambda: DenseIndex.load("/nonexistent/folder"), FileNotFoundError, "no dense index in"),
    ],
)
def test_dense_guards(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_dense_k_clipped():
    indices, scores = DenseIndex(np.eye(3, dtype=np.float32)).search(np.eye(3, dtype=np.float32), k=10)
    assert indices.shape == (3, 3) and indices[:, 0].tolist() == [0, 1, 2]


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
    cal = fitted.fit_calibration(conversations(), negatives=3)
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
    searches = logged_searches(conversations(), retriever.id_to_index)
    assert len(searches) == 4
    recall = retrieval_recall(retriever, conversations(), ks=(1, 3))
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


# -- the reward stage -------------------------------------------------------------------------


def context(reply, knowledge=None, messages=("Will it rain in Boston on Friday? I have a picnic.",)):
    history = tuple(Turn("customer", m) for m in messages)
    return TurnContext(history=history, reply=reply, knowledge=knowledge)


def test_reward_prefers_relevant_knowledge(retriever):
    reward = RetrievalReward(retriever)
    cases = {
        "relevant knowledge": context("Yes, it will be raining in Boston on Friday.", (KB[3],)),
        "relevant reply, no search": context("Friday in Boston: raining, so take an umbrella to the picnic."),
        "irrelevant knowledge": context("Ginza is an expensive Japanese restaurant.", (RESTAURANTS[1],)),
        "irrelevant reply": context("Ginza is an expensive Japanese restaurant."),
        "generic": context("ok"),
        "empty": context(""),
        "parrot": context("Will it rain in Boston on Friday? I have a picnic."),
        "searched, found nothing": context("Sorry, I found nothing.", ()),
        "no customer message yet": context("Raining in Boston on Friday.", (KB[3],), messages=()),
    }
    scores = dict(zip(cases, reward.score(list(cases.values())), strict=True))
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    for good in ("relevant knowledge", "relevant reply, no search"):
        for bad in ("irrelevant knowledge", "irrelevant reply", "generic", "empty", "parrot"):
            assert scores[good] > scores[bad], (good, bad, scores)
    assert scores["relevant knowledge"] > 0.5
    assert scores["parrot"] == scores["empty"] == scores["searched, found nothing"] == 0.0
    assert scores["no customer message yet"] == 0.0
    assert scores["generic"] < 0.2
    assert reward.score([]) == []


def test_reward_scores_documents_outside_the_kb(retriever):
    reward = RetrievalReward(retriever)
    sent = KBDocument("live-1", "Forecast for Boston, Friday: heavy rain.", "bot forecast")
    other = dataclasses.replace(sent, id="live-2", text="Our store opens at 9am on weekdays.")
    good, bad = reward.score([context("Rain on Friday.", (sent,)), context("We open at 9.", (other,))])
    assert good > bad


def test_reward_fit_save_load(retriever, tmp_path):
    reward = RetrievalReward(retriever, need_messages=2)
    cal = reward.fit(conversations(), negatives=3)
    assert cal.w_cosine + cal.w_bm25 > 0
    reward.save(tmp_path)
    loaded = RetrievalReward.load(tmp_path, retriever)
    assert loaded.need_calibration == cal and loaded.need_messages == 2
    ctxs = [context("Raining in Boston.", (KB[3],)), context("ok")]
    assert loaded.score(ctxs) == reward.score(ctxs)
    with pytest.raises(ValueError, match="need_messages=0"):
        RetrievalReward(retriever, need_messages=0)


def test_empty_query_batches(retriever):
    assert retriever.search([], k=3) == []
    assert retriever.relevance_matrix([]).shape == (0, len(KB))
    assert retriever.search([""], k=2)[0][0][1] >= 0  # a query without words still returns documents
