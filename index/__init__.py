"""The index stage: passages, embeddings, FAISS + BM25 snapshots, and the one `Searcher`.

Build side (imports torch when it must embed): `index.build.build_index`.
Query side (never imports torch): `index.search.Searcher`, `index.evaluate`.
Nothing is imported here, so `import index.search` stays light.
"""
