"""How embeddings are stored and indexed, and the SQL that reaches them through the index.

Three choices (`EMBEDDING_STORAGE`), measured in docs/benchmarks.md ("A million photos"):

- `halfvec-index` (the default): the column stays `vector(N)` (float32, what other tools read);
  the HNSW index holds a half-precision copy, `(embedding::halfvec(N))`: about half the size
  of a float32 index, at the same recall.
- `float32`: the column and the index are float32 (what Image Browser did before).
- `halfvec`: the column itself is `halfvec(N)`: the table is about half the size too, and
  each value keeps 3 significant digits.

The planner walks an expression index only when the query's ORDER BY is the same expression,
typmod included: `embedding::halfvec(768)`, never `embedding::halfvec`. Every query that sorts
by distance takes its SQL from `VectorLayout.key` and `VectorLayout.query`.
"""

from __future__ import annotations

from dataclasses import dataclass

STORAGES = ("halfvec-index", "float32", "halfvec")
DEFAULT_STORAGE = "halfvec-index"
FLOAT32_INDEX = "image_embeddings_embedding_hnsw"
HALF_INDEX = "image_embeddings_embedding_half_hnsw"
INDEXES = (FLOAT32_INDEX, HALF_INDEX)


@dataclass(frozen=True)
class VectorLayout:
    """The embedding column's type and the HNSW index searches walk (None: no usable one)."""

    column: str  # "vector" or "halfvec"
    index: str | None  # "float32", "halfvec", or None
    dimensions: int

    @classmethod
    def wanted(cls, storage: str, dimensions: int) -> VectorLayout:
        """The layout a storage choice asks for."""
        if storage not in STORAGES:
            raise ValueError(f"unknown embedding storage {storage!r}")
        column = "halfvec" if storage == "halfvec" else "vector"
        return cls(column, "float32" if storage == "float32" else "halfvec", int(dimensions))

    def with_column(self, column: str) -> VectorLayout:
        """The closest layout on a column of another type (before the column is converted)."""
        if column == self.column:
            return self
        return VectorLayout(column, "halfvec" if column == "halfvec" else self.index,
                            self.dimensions)

    @property
    def storage(self) -> str:
        """The EMBEDDING_STORAGE value this layout is (an unindexed one reads as its column's)."""
        if self.column == "halfvec":
            return "halfvec"
        return "float32" if self.index == "float32" else "halfvec-index"

    @property
    def index_name(self) -> str | None:
        """The name of the HNSW index this layout searches with."""
        return {"float32": FLOAT32_INDEX, "halfvec": HALF_INDEX}.get(self.index or "")

    @property
    def half(self) -> str:
        """The half-precision type of this width, typmod included (the index's expression)."""
        return f"halfvec({self.dimensions})"

    @property
    def key(self) -> str:
        """SQL: what the HNSW index holds for a row, written exactly as the index is."""
        if self.column == "vector" and self.index == "halfvec":
            return f"(embedding::{self.half})"
        return "embedding"

    def query(self, param: str) -> str:
        """SQL: a query vector (a float32 parameter) in the type `key` is compared with."""
        if self.column == "halfvec" or self.index == "halfvec":
            return f"{param}::{self.half}"
        return param

    def distance(self, param: str) -> str:
        """SQL: the cosine distance to a query vector at the column's own precision."""
        if self.column == "halfvec":
            return f"embedding <=> {param}::{self.half}"
        return f"embedding <=> {param}"

    def order_by(self, param: str) -> str:
        """SQL: the distance the HNSW index sorts by (an ORDER BY the planner matches)."""
        return f"{self.key} <=> {self.query(param)}"

    def index_sql(self, concurrently: bool) -> str:
        """The CREATE INDEX statement of this layout's HNSW index."""
        if self.index is None:
            raise ValueError("this layout has no index")
        ops = "vector_cosine_ops" if self.index == "float32" else "halfvec_cosine_ops"
        how = "CONCURRENTLY " if concurrently else ""
        return (f"CREATE INDEX {how}IF NOT EXISTS {self.index_name} "
                f"ON image_embeddings USING hnsw ({self.key} {ops})")

    def describe(self) -> str:
        """A few words for people: what is stored, what is indexed."""
        column = "half-precision" if self.column == "halfvec" else "float32"
        index = {"float32": "float32 HNSW index", "halfvec": "half-precision HNSW index",
                 None: "no vector index yet"}[self.index]
        return f"{column} {self.column}({self.dimensions}) column, {index}"
