"""How the HNSW index holds embeddings, and the SQL that reaches them through it.

Two choices (`EMBEDDING_STORAGE`), measured in docs/benchmarks.md ("A million photos"):

- `halfvec-index` (the default): the column stays `vector(N)` (float32, what other tools read);
  the HNSW index holds a half-precision copy, `(embedding::halfvec(N))`: about half the size
  of a float32 index, at the same recall.
- `float32`: the index holds float32 vectors (what Image Browser did before).

The planner walks an expression index only when the query's ORDER BY is the same expression,
typmod included: `embedding::halfvec(768)`, never `embedding::halfvec`. Every query that sorts
by distance takes its ORDER BY from `VectorLayout.order_by`.

How well the graph is connected (`GraphOptions`) is fixed by the build: `GRAPH` is what this
version builds, and an index built with other options is rebuilt by the index migration
(vector_index.py) under `REBUILD_SUFFIX`, then renamed, search going on meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

STORAGES = ("halfvec-index", "float32")
DEFAULT_STORAGE = "halfvec-index"
FLOAT32_INDEX = "image_embeddings_embedding_hnsw"
HALF_INDEX = "image_embeddings_embedding_half_hnsw"
REBUILD_SUFFIX = "_rebuild"  # a replacement built beside the index it replaces
INDEXES = (FLOAT32_INDEX, HALF_INDEX, FLOAT32_INDEX + REBUILD_SUFFIX, HALF_INDEX + REBUILD_SUFFIX)


@dataclass(frozen=True)
class GraphOptions:
    """How the HNSW graph is built: `m` links per node on each layer (twice that on the
    bottom one) and `ef_construction` candidates weighed for each new node's links. More
    candidates give a better-connected graph (higher recall at the same ef_search, the same
    size) for a longer build; a larger m also gives a larger index."""

    m: int = 16
    ef_construction: int = 64  # pgvector's defaults: what an index without options has

    @classmethod
    def from_reloptions(cls, options: list[str] | None) -> GraphOptions:
        """The options of an index as pg_class.reloptions lists them ("m=16", ...)."""
        given = dict(option.split("=", 1) for option in options or ())
        default = cls()
        return cls(int(given.get("m", default.m)),
                   int(given.get("ef_construction", default.ef_construction)))

    def sql(self) -> str:
        """SQL: the WITH clause of CREATE INDEX."""
        return f"WITH (m = {int(self.m)}, ef_construction = {int(self.ef_construction)})"

    def describe(self) -> str:
        return f"m {self.m}, ef_construction {self.ef_construction}"


# What this version builds. At 1,000,000 rows (docs/benchmarks.md, "A million photos") and in
# filtered search at 100,000 (issue 10), pgvector's default ef_construction of 64 leaves whole
# queries in the wrong part of the graph; 200 lifts recall at the same ef_search and the same
# index size, for a build about three times as long.
GRAPH = GraphOptions(m=16, ef_construction=200)


def index_kind(name: str) -> str:
    """"halfvec" or "float32": what one of our index names holds (the rebuild's too)."""
    return "halfvec" if name.startswith(HALF_INDEX) else "float32"


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

    def index_sql(self, concurrently: bool, *, rebuild: bool = False,
                  graph: GraphOptions = GRAPH) -> str:
        """The CREATE INDEX statement of this layout's HNSW index (under its rebuild name
        with `rebuild`)."""
        if self.index is None:
            raise ValueError("this layout has no index")
        ops = "vector_cosine_ops" if self.index == "float32" else "halfvec_cosine_ops"
        how = "CONCURRENTLY " if concurrently else ""
        name = self.index_name + (REBUILD_SUFFIX if rebuild else "")
        return (f"CREATE INDEX {how}IF NOT EXISTS {name} "
                f"ON image_embeddings USING hnsw ({self.key} {ops}) {graph.sql()}")

    def describe(self) -> str:
        """A few words for people: what the index holds."""
        index = {"float32": "float32 HNSW index", "halfvec": "half-precision HNSW index",
                 None: "no vector index yet"}[self.index]
        return f"vector({self.dimensions}) column, {index}"
