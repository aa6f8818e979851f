"""The FAISS dense index: exact search on real embeddings, save/load, guards."""

import numpy as np
import pytest
from support import KB

from csrl.rewards.search.dense_index import DenseIndex
from csrl.rewards.search.retriever import document_text


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
    for kind in ("hnsw", "ivf"):
        approximate = DenseIndex(vectors, kind=kind)
        assert approximate.search(queries, k=1)[0].tolist() == indices[:, :1].tolist()  # exact on a KB this small


def test_auto_builds_flat_for_a_small_kb_and_hnsw_above_the_threshold(monkeypatch):
    from csrl.rewards.search import dense_index

    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit norm: each vector's best match is itself
    assert DenseIndex(vectors).kind == "flat"
    monkeypatch.setattr(dense_index, "FLAT_MAX_DOCS", 49)
    index = DenseIndex(vectors)
    assert index.kind == "hnsw" and len(index) == 50
    assert index.search(vectors[:5], k=1)[0].ravel().tolist() == [0, 1, 2, 3, 4]  # each vector finds itself


def test_dense_save_load_round_trip(encoder, tmp_path):
    vectors = encoder.encode([d.text for d in KB[:6]])
    for kind in ("flat", "hnsw", "ivf"):
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
        (lambda: DenseIndex(np.ones((2, 4)), kind="annoy"), ValueError, "kind='annoy': expected one of"),
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
