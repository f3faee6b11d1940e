"""The HNSW index: found, built, replaced, measured.

Replacing the index of a library in use builds the new one first, with CREATE INDEX
CONCURRENTLY (writes go on), and drops the old one only once the new one is valid, so search
keeps working throughout. A build that is stopped (Ctrl-C, a crash, a lost connection) leaves
an *invalid* index behind: the next migration drops it and builds again.

An index of the wanted kind built with other graph options (`GRAPH`, layout.py) is replaced
the same way: the new one is built under the rebuild name, the old one dropped, the new one
renamed. Each step is seen in the catalog, so a migration stopped between two of them is
finished by the next.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import psycopg

from .counters import COUNTS_TABLE
from .layout import GRAPH, INDEXES, REBUILD_SUFFIX, GraphOptions, VectorLayout, index_kind

TABLE = "image_embeddings"

MIGRATION_LOCK_KEY = 7_210_002  # advisory lock: one index migration at a time
# Rows embedded without a half-precision copy yet (schema v6): also the predicate of the partial
# index (schema.py) that finds them without reading the others.
UNCOPIED = "embedding_half IS NULL AND embedding IS NOT NULL"
FILL_BATCH = 1_000  # rows given their half-precision copy per transaction
FILL_TELL_S = 10.0  # how often a long fill says how far it is
LOCK_POLL_S = 0.2
# What pgvector's HNSW build keeps in memory per row at m = 16 beyond the vector itself
# (neighbour lists, element headers); checked against its "graph no longer fits" notice
# (docs/benchmarks.md, "A million photos").
GRAPH_BYTES_PER_ROW = 700
MEMORY_FLOOR_MB = 64


@dataclass(frozen=True)
class IndexState:
    """The embedding column's width and our HNSW indexes as the catalog has them."""

    dimensions: int | None  # None when there is no table
    valid: tuple[str, ...]  # names of our valid HNSW indexes
    invalid: tuple[str, ...]  # left behind by a stopped CREATE INDEX CONCURRENTLY
    graphs: dict[str, GraphOptions] = field(default_factory=dict)  # of the valid ones

    def layout(self) -> VectorLayout | None:
        """What searches use now: the half-precision index when valid, else the float32 one."""
        if self.dimensions is None:
            return None
        kinds = {index_kind(name) for name in self.valid}
        index = "halfvec" if "halfvec" in kinds else "float32" if "float32" in kinds else None
        return VectorLayout(index, self.dimensions)

    def pending(self, wanted: VectorLayout) -> bool:
        """Whether a migration has anything to do to reach `wanted`."""
        return self.dimensions is not None and (
            self.invalid != () or self.valid != (wanted.index_name,)
            or self.finished(wanted) != wanted.index_name)

    def finished(self, wanted: VectorLayout) -> str | None:
        """A valid index of ours that is already what `wanted` asks for, graph included (the
        proper name first)."""
        return next((name for name in sorted(self.valid) if index_kind(name) == wanted.index
                     and self.graphs.get(name) == GRAPH), None)


@dataclass(frozen=True)
class Sizes:
    """Bytes on disk: the table (heap + TOAST), the HNSW index, the other indexes."""

    rows: int  # the planner's estimate (exact right after ANALYZE or VACUUM)
    table: int
    vector_index: int
    other_indexes: int

    @property
    def total(self) -> int:
        """Everything the table takes, indexes included."""
        return self.table + self.vector_index + self.other_indexes


def memory_needed_mb(layout: VectorLayout, rows: int) -> int:
    """maintenance_work_mem (MB) that holds the HNSW graph of `rows` rows while it is built."""
    value = layout.dimensions * (4 if layout.index == "float32" else 2) + 8
    return max(MEMORY_FLOOR_MB, int(rows * (value + GRAPH_BYTES_PER_ROW) * 1.1 / 2**20) + 1)


class VectorIndex:
    """Inspects and migrates the HNSW index on one (autocommit) connection."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def state(self) -> IndexState:
        """The column's width, and which of our HNSW indexes are valid or not."""
        row = self.conn.execute(
            """SELECT format_type(a.atttypid, a.atttypmod), ours.names, ours.valid, ours.options
               FROM pg_attribute a, LATERAL (
                   SELECT array_agg(c.relname ORDER BY c.relname) AS names,
                          array_agg(i.indisvalid ORDER BY c.relname) AS valid,
                          array_agg(coalesce(array_to_string(c.reloptions, ','), '')
                                    ORDER BY c.relname) AS options
                   FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE i.indrelid = a.attrelid AND c.relname = ANY(%(ours)s)) AS ours
               WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = 'embedding'
                 AND NOT a.attisdropped""",
            {"ours": list(INDEXES), "table": TABLE},
        ).fetchone()
        if row is None:
            return IndexState(None, (), ())
        indexes = list(zip(row[1] or (), row[2] or (), row[3] or ()))
        return IndexState(
            vector_width(row[0]),
            tuple(name for name, valid, _ in indexes if valid),
            tuple(name for name, valid, _ in indexes if not valid),
            {name: GraphOptions.from_reloptions(options.split(",") if options else None)
             for name, valid, options in indexes if valid})

    def layout(self) -> VectorLayout | None:
        """The layout searches must use now (None when there is no table)."""
        return self.state().layout()

    def pending(self, wanted: VectorLayout) -> bool:
        """Whether `migrate` has anything to do to reach `wanted` (the half-precision copies
        of rows embedded before schema v6 included)."""
        return self.state().pending(wanted) or self.uncopied() > 0

    def uncopied(self, cap: int = 1) -> int:
        """How many embedded rows have no half-precision copy yet, counting no further than
        `cap` (0 before schema v6 added the column: the schema migration comes first)."""
        if not self._has_column("embedding_half"):
            return 0
        return self.conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE {UNCOPIED} LIMIT %s) s",
            (cap,)).fetchone()[0]

    def fill_half_copies(self, say: Callable[[str], None] = lambda _: None,
                         cancelled: Callable[[], bool] = lambda: False) -> int:
        """Give every embedded row without one its half-precision copy, `FILL_BATCH` rows per
        transaction (each rewrites its rows, so each is a short write); `cancelled` is asked
        between them. Returns how many rows were filled."""
        left = self.uncopied(cap=10**12)
        if not left:
            return 0
        say(f"copying the embeddings of {left:,} rows at half precision into their rows "
            "(faster exact scans of filtered searches); search works meanwhile")
        filled, told = 0, time.monotonic()
        while not cancelled():
            done = self.conn.execute(
                f"""UPDATE {TABLE} SET embedding_half = embedding::halfvec
                    WHERE id IN (SELECT id FROM {TABLE} WHERE {UNCOPIED}
                                 LIMIT %s FOR UPDATE SKIP LOCKED)""",
                (FILL_BATCH,)).rowcount
            filled += done
            if done == 0:
                break
            if time.monotonic() - told >= FILL_TELL_S:
                say(f"half-precision copies: {filled:,} of {left:,} rows")
                told = time.monotonic()
        if filled:
            say(f"half-precision copies: {filled:,} rows filled"
                + ("" if not cancelled() else " (stopped; the next run goes on)"))
        return filled

    def _has_column(self, name: str) -> bool:
        return self.conn.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)
               AND attname = %s AND NOT attisdropped)""", (TABLE, name)).fetchone()[0]

    def row_estimate(self) -> int:
        """How many rows the table has, without counting them: the database's counters
        (counters.py), else the planner's estimate (0 for a table never analysed)."""
        if self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (COUNTS_TABLE,)).fetchone()[0]:
            row = self.conn.execute(
                f"SELECT images + hidden FROM {COUNTS_TABLE} WHERE scope = 'library' AND key = ''"
            ).fetchone()
            if row:
                return int(row[0])
        row = self.conn.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            (TABLE,)).fetchone()
        return int(row[0]) if row else 0

    def migrate(self, wanted: VectorLayout, memory_mb: int,
                say: Callable[[str], None] = lambda _: None,
                cancelled: Callable[[], bool] = lambda: False) -> None:
        """Reach `wanted`: give rows embedded before schema v6 their half-precision copies,
        drop what a stopped build left, build the wanted index concurrently
        (under the rebuild name when an index of that name is there with another graph), drop
        the others, give the new one its name. Each step is idempotent and `cancelled` is asked
        before each: a stopped migration is finished by the next call. Must run outside a
        transaction."""
        with self._migration_lock(say, cancelled) as locked:
            if not locked:
                return
            # First: each copy written also goes into the HNSW index there is (a new row
            # version), so none is built only to take the copies one by one.
            self.fill_half_copies(say, cancelled)
            if cancelled():
                return
            for name in self.state().invalid:
                say(f"dropping {name}, left unfinished by a stopped build")
                self.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            if cancelled():
                return
            state = self.state()
            target = state.finished(wanted)
            if target is None:
                rebuild = wanted.index_name in state.valid
                what = wanted.describe().split(", ")[1]
                if rebuild:
                    what = (f"{what} with a better-connected graph ({GRAPH.describe()}; it has "
                            f"{state.graphs[wanted.index_name].describe()})")
                say(f"{'rebuilding' if rebuild else 'building'} the {what} over about "
                    f"{self.row_estimate():,} rows (maintenance_work_mem {memory_mb:,} MB); "
                    "search uses the current index meanwhile")
                stale = wanted.index_name + REBUILD_SUFFIX
                if rebuild and stale in state.valid:  # a rebuild with yet other options
                    self.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {stale}")
                self._build(wanted, memory_mb, concurrently=True, rebuild=rebuild)
                target = self.state().finished(wanted)
                if target is None:  # not there after all: keep what search uses
                    return
            for name in self.state().valid:
                if name != target and not cancelled():
                    say(f"dropping the index it replaces, {name}")
                    self.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            if target != wanted.index_name and not cancelled():
                self.conn.execute(f"ALTER INDEX {target} RENAME TO {wanted.index_name}")

    def build(self, wanted: VectorLayout, memory_mb: int) -> None:
        """Build the wanted index in one statement (after a bulk load: writes wait, reads go
        on), then refresh the planner's statistics."""
        self._build(wanted, memory_mb, concurrently=False)
        self.conn.execute(f"ANALYZE {TABLE}")

    def drop_all(self, keep: str | None = None) -> None:
        """Drop every HNSW index of ours but `keep` (before a bulk load: building afterwards
        is faster), and `keep` too when it is invalid or built with another graph."""
        state = self.state()
        for name in INDEXES:
            if name != keep or name in state.invalid or state.graphs.get(name) != GRAPH:
                self.conn.execute(f"DROP INDEX IF EXISTS {name}")

    def build_progress(self) -> tuple[str, int] | None:
        """(phase, rows done) of an index build running on the table, or None."""
        row = self.conn.execute(
            """SELECT phase, tuples_done FROM pg_stat_progress_create_index
               WHERE relid = to_regclass(%s)""", (TABLE,)).fetchone()
        return (row[0], int(row[1] or 0)) if row else None

    def sizes(self) -> Sizes:
        """How much disk the table, its HNSW index and its other indexes take now."""
        row = self.conn.execute(
            """SELECT greatest(c.reltuples, 0)::bigint, pg_table_size(c.oid),
                      coalesce(sum(pg_relation_size(i.indexrelid))
                               FILTER (WHERE ic.relname = ANY(%(ours)s)), 0),
                      coalesce(sum(pg_relation_size(i.indexrelid))
                               FILTER (WHERE NOT ic.relname = ANY(%(ours)s)), 0)
               FROM pg_class c LEFT JOIN pg_index i ON i.indrelid = c.oid
               LEFT JOIN pg_class ic ON ic.oid = i.indexrelid
               WHERE c.oid = to_regclass(%(table)s)
               GROUP BY c.oid, c.reltuples""",
            {"ours": list(INDEXES), "table": TABLE},
        ).fetchone()
        return Sizes(*(int(v) for v in row)) if row else Sizes(0, 0, 0, 0)

    def _build(self, target: VectorLayout, memory_mb: int, concurrently: bool,
               rebuild: bool = False) -> None:
        # Session-level: CREATE INDEX CONCURRENTLY cannot run inside a transaction.
        self.conn.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                          (f"{int(memory_mb)}MB",))
        try:
            self.conn.execute(target.index_sql(concurrently, rebuild=rebuild))
        finally:
            if not self.conn.closed and self.conn.info.transaction_status == 0:  # idle
                self.conn.execute("RESET maintenance_work_mem")

    @contextmanager
    def _migration_lock(self, say: Callable[[str], None],
                        cancelled: Callable[[], bool]) -> Iterator[bool]:
        """One migration at a time across processes (released when the session ends, too);
        yields False when cancelled while waiting. Never waits inside a statement: CREATE INDEX
        CONCURRENTLY waits for every open transaction, a blocked lock request included."""
        waited = False
        while not self.conn.execute("SELECT pg_try_advisory_lock(%s)",
                                    (MIGRATION_LOCK_KEY,)).fetchone()[0]:
            if cancelled():
                yield False
                return
            if not waited:
                say("another migration of the vector index is running: waiting for it")
                waited = True
            time.sleep(LOCK_POLL_S)
        try:
            yield True
        finally:
            if not self.conn.closed and self.conn.info.transaction_status == 0:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def vector_width(declared: str) -> int:
    """768 from "vector(768)"; ValueError for a type of any other shape."""
    if declared.startswith("vector(") and declared.endswith(")"):
        return int(declared[len("vector("):-1])
    raise ValueError(f"the column {TABLE}.embedding has type {declared}; expected vector(N)")
