"""The SQL each storage choice searches with: the index's own expression, typmod included."""

import pytest

from shared.settings import EMBEDDING_STORAGES
from shared.store.layout import FLOAT32_INDEX, GRAPH, HALF_INDEX, STORAGES, GraphOptions, VectorLayout


def test_the_half_precision_index_is_sorted_by_its_own_expression():
    half = VectorLayout.wanted("halfvec-index", 768)
    assert half.index_name == HALF_INDEX and half.storage == "halfvec-index"
    assert half.order_by("%(q)s") == "(embedding::halfvec(768)) <=> %(q)s::halfvec(768)"
    assert "USING hnsw ((embedding::halfvec(768)) halfvec_cosine_ops)" in half.index_sql(False)
    assert "CONCURRENTLY" in half.index_sql(True)


def test_the_float32_index_is_the_column_itself():
    full = VectorLayout.wanted("float32", 512)
    assert full.index_name == FLOAT32_INDEX and full.storage == "float32"
    assert full.order_by("%s") == "embedding <=> %s"
    assert "USING hnsw (embedding vector_cosine_ops)" in full.index_sql(False)


def test_no_index_and_unknown_storages():
    assert VectorLayout(None, 768).describe() == "vector(768) column, no vector index yet"
    with pytest.raises(ValueError):
        VectorLayout(None, 768).index_sql(False)
    with pytest.raises(ValueError):
        VectorLayout.wanted("halfvec", 768)
    assert STORAGES == EMBEDDING_STORAGES  # the setting's choices are the store's


def test_the_graph_options_are_built_and_read_back():
    half = VectorLayout.wanted("halfvec-index", 768)
    assert half.index_sql(False).endswith(
        f"WITH (m = {GRAPH.m}, ef_construction = {GRAPH.ef_construction})")
    assert f"{HALF_INDEX}_rebuild ON" in half.index_sql(True, rebuild=True)
    assert GraphOptions.from_reloptions(None) == GraphOptions(16, 64)  # pgvector's defaults
    assert GraphOptions.from_reloptions(["ef_construction=200"]) == GraphOptions(16, 200)
    assert GraphOptions.from_reloptions(["m=24", "ef_construction=96"]) == GraphOptions(24, 96)
