"""How the HNSW index holds embeddings, and the SQL that reaches them through it.

Two choices (`EMBEDDING_STORAGE`), measured in docs/benchmarks.md ("A million photos"):

- `halfvec-index` (the default): the column stays `vector(N)` (float32, what other tools read);
  the HNSW index holds a half-precision copy, `(embedding::halfvec(N))`: about half the size
  of a float32 index, at the same recall.
- `float32`: the index holds float32 vectors (what Image Browser did before).

The planner walks an expression index only when the query's ORDER BY is the same expression,
typmod included: `embedding::halfvec(768)`, never `embedding::halfvec`. Every query that sorts
by distance takes its ORDER BY from `VectorLayout.order_by`.
"""

from __future__ import annotations

from dataclasses import dataclass

STORAGES = ("halfvec-index", "float32")
DEFAULT_STORAGE = "halfvec-index"
FLOAT32_INDEX = "image_embeddings_embedding_hnsw"
HALF_INDEX = "image_embeddings_embedding_half_hnsw"
INDEXES = (FLOAT32_INDEX, HALF_INDEX)


@dataclass(frozen=True)
class VectorLayout:
    """Which HNSW index searches walk ("float32", "halfvec", or None: none usable)."""

    index: str | None
    dimensions: int

    @classmethod
    def wanted(cls, storage: str, dimensions: int) -> VectorLayout:
        """The layout a storage choice asks for."""
        if storage not in STORAGES:
            raise ValueError(f"unknown embedding storage {storage!r}")
        return cls("float32" if storage == "float32" else "halfvec", int(dimensions))

    @property
    def storage(self) -> str | None:
        """The EMBEDDING_STORAGE value this layout is (None without an index)."""
        return {"float32": "float32", "halfvec": "halfvec-index"}.get(self.index or "")

    @property
    def index_name(self) -> str | None:
        """The name of the HNSW index this layout searches with."""
        return {"float32": FLOAT32_INDEX, "halfvec": HALF_INDEX}.get(self.index or "")

    @property
    def key(self) -> str:
        """SQL: what the HNSW index holds for a row, written exactly as the index is."""
        if self.index == "halfvec":
            return f"(embedding::halfvec({self.dimensions}))"
        return "embedding"

    def order_by(self, param: str) -> str:
        """SQL: the distance the HNSW index sorts by (an ORDER BY the planner matches), to a
        query vector given as a float32 parameter."""
        if self.index == "halfvec":
            return f"{self.key} <=> {param}::halfvec({self.dimensions})"
        return f"embedding <=> {param}"

    def index_sql(self, concurrently: bool) -> str:
        """The CREATE INDEX statement of this layout's HNSW index."""
        if self.index is None:
            raise ValueError("this layout has no index")
        ops = "vector_cosine_ops" if self.index == "float32" else "halfvec_cosine_ops"
        how = "CONCURRENTLY " if concurrently else ""
        return (f"CREATE INDEX {how}IF NOT EXISTS {self.index_name} "
                f"ON image_embeddings USING hnsw ({self.key} {ops})")

    def describe(self) -> str:
        """A few words for people: what the index holds."""
        index = {"float32": "float32 HNSW index", "halfvec": "half-precision HNSW index",
                 None: "no vector index yet"}[self.index]
        return f"vector({self.dimensions}) column, {index}"
