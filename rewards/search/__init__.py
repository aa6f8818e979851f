"""The knowledge-base search engine: BM25 (bm25s), a FAISS dense index and their calibrated hybrid."""
