"""The embedding queue: rows that need a vector, leased to workers so any number can run at once.

A row is *to do* when it has no embedding (or, when re-embedding, one by another model) and has
not failed (unless failures are retried); it is *free* when no live lease holds it. Content is
embedded once: only the lowest-id row to do of each SHA-256 is a lead, the others share its
vector. `FOR UPDATE SKIP LOCKED` lets workers claim side by side without waiting on each other;
a lease that is not renewed expires, so a killed worker's rows are claimed again later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import class_row

from .rows import Claim


def _missing(alias: str) -> str:
    """SQL: the row has no embedding by the queue's model (when re-embedding) or none at all."""
    return (f"({alias}.embedding IS NULL OR (%(reembed)s AND "
            f"{alias}.embedding_model IS DISTINCT FROM %(model)s))")


def _todo(alias: str) -> str:
    """SQL: the row is missing an embedding, has not failed (unless failures are retried), and
    its file is in the folder (a hidden row cannot be read)."""
    return (f"({_missing(alias)} AND ({alias}.last_error IS NULL OR %(retry)s) "
            f"AND {alias}.missing_since IS NULL)")


def _free(alias: str) -> str:
    """SQL: no live lease holds the row."""
    return f"({alias}.claimed_by IS NULL OR {alias}.claim_expires_at < now())"


class EmbeddingQueue:
    """The work of one model's backfill on one connection: claim, renew, save, fail, release.

    Every query sees the queue's model and its choices (re-embed other models' rows, retry
    failures) through the same named parameters, filled in by `_execute`.
    """

    def __init__(
        self, conn: psycopg.Connection, model_id: str, *, reembed: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.conn = conn
        self.model_id = model_id
        self.reembed = reembed
        self.retry_failed = retry_failed

    def _execute(self, sql: str, cursor: psycopg.Cursor | None = None, **params: Any) -> psycopg.Cursor:
        """Run `sql` with the queue's parameters (model, reembed, retry) and the given ones."""
        values = {"model": self.model_id, "reembed": self.reembed, "retry": self.retry_failed,
                  **params}
        return (cursor or self.conn.cursor()).execute(sql, values)

    def count_waiting(self) -> int:
        """How many rows are to do and free right now."""
        return self._execute(
            f"SELECT count(*) FROM image_embeddings e WHERE {_todo('e')} AND {_free('e')}"
        ).fetchone()[0]

    def fill_shared(self) -> list[str]:
        """Give rows to do the vector this model already made for the same content."""
        rows = self._execute(
            f"""UPDATE image_embeddings t
                SET embedding = s.embedding, embedding_model = s.embedding_model,
                    embedded_at = now(), last_error = NULL, updated_at = now()
                FROM (SELECT DISTINCT ON (e.sha256) e.sha256, e.embedding, e.embedding_model
                      FROM image_embeddings e
                      WHERE e.embedding_model = %(model)s AND e.embedding IS NOT NULL
                        AND e.sha256 IN (SELECT w.sha256 FROM image_embeddings w
                                         WHERE {_missing('w')} AND {_free('w')}
                                           AND w.missing_since IS NULL)
                      ORDER BY e.sha256, e.embedded_at DESC) s
                WHERE t.sha256 = s.sha256 AND {_missing('t')} AND {_free('t')}
                  AND t.missing_since IS NULL
                RETURNING t.filename"""
        ).fetchall()
        return [name for (name,) in rows]

    def claim(self, worker_id: str, n: int, lease_seconds: float) -> list[Claim]:
        """Lease up to `n` contents to embed, each as its lead row plus the rows sharing it."""
        with self.conn.cursor(row_factory=class_row(Claim)) as cur:
            claims = self._execute(
                f"""WITH picked AS (
                        SELECT e.id, e.sha256 FROM image_embeddings e
                        WHERE {_todo('e')} AND {_free('e')}
                          AND NOT EXISTS (
                              SELECT 1 FROM image_embeddings o
                              WHERE o.sha256 = e.sha256 AND o.id <> e.id
                                AND ((o.id < e.id AND {_todo('o')} AND {_free('o')})
                                     OR (o.claimed_by IS NOT NULL AND o.claim_expires_at >= now())))
                        ORDER BY e.created_at DESC, e.id DESC  -- newest first, as the pages show
                        LIMIT %(n)s
                        FOR UPDATE OF e SKIP LOCKED)
                    UPDATE image_embeddings t
                    SET claimed_by = %(worker)s,
                        claim_expires_at = now() + make_interval(secs => %(lease)s)
                    FROM picked
                    WHERE t.id = picked.id
                       OR (t.sha256 = picked.sha256 AND {_todo('t')} AND {_free('t')})
                    RETURNING t.id, t.filename, t.sha256, t.id = picked.id AS lead""",
                cursor=cur, worker=worker_id, n=n, lease=float(lease_seconds),
            ).fetchall()
        return sorted(claims, key=lambda c: (not c.lead, c.id))

    def extend(self, worker_id: str, lease_seconds: float) -> int:
        """Renew every lease this worker holds; return how many rows it still holds."""
        return self._execute(
            """UPDATE image_embeddings
               SET claim_expires_at = now() + make_interval(secs => %(lease)s)
               WHERE claimed_by = %(worker)s""",
            worker=worker_id, lease=float(lease_seconds),
        ).rowcount

    def save(self, worker_id: str, vectors: list[tuple[int, np.ndarray]]) -> list[str]:
        """Store each lead's vector on it and on every row of the same content still missing one.

        Rows that another worker holds a live lease on are left to it. Returns the filenames
        written, and releases their claims.
        """
        if not vectors:
            return []
        rows = self._execute(
            f"""UPDATE image_embeddings t
                SET embedding = d.embedding, embedding_model = %(model)s, embedded_at = now(),
                    last_error = NULL, claimed_by = NULL, claim_expires_at = NULL,
                    updated_at = now()
                FROM (SELECT e.id, e.sha256, v.embedding
                      FROM unnest(%(ids)s::bigint[], %(vectors)s::vector[]) AS v(id, embedding)
                      JOIN image_embeddings e ON e.id = v.id) d
                WHERE (t.id = d.id OR t.sha256 = d.sha256)
                  AND (t.claimed_by = %(worker)s OR ({_free('t')} AND {_missing('t')}))
                RETURNING t.filename""",
            worker=worker_id, ids=[row_id for row_id, _ in vectors],
            vectors=[np.asarray(v, dtype=np.float32) for _, v in vectors],
        ).fetchall()
        return [name for (name,) in rows]

    def record_failures(
        self, worker_id: str, failures: list[tuple[int, str, int]]
    ) -> list[tuple[str, str]]:
        """Store (lead id, error, attempts made) on each lead and the rows of its content this
        worker holds, releasing them; return (filename, error) of each row marked failed."""
        if not failures:
            return []
        rows = self._execute(
            """UPDATE image_embeddings t
               SET last_error = d.error, attempts = t.attempts + d.attempts,
                   claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
               FROM (SELECT e.id, e.sha256, f.error, f.attempts
                     FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(attempts)s::int[])
                          AS f(id, error, attempts)
                     JOIN image_embeddings e ON e.id = f.id) d
               WHERE (t.id = d.id OR t.sha256 = d.sha256) AND t.claimed_by = %(worker)s
               RETURNING t.filename, d.error""",
            worker=worker_id, ids=[f[0] for f in failures], errors=[f[1] for f in failures],
            attempts=[f[2] for f in failures],
        ).fetchall()
        return [(name, error) for name, error in rows]

    def release(self, worker_id: str, ids: list[int] | None = None) -> int:
        """Give back this worker's leases (all, or those on `ids`) without recording anything."""
        return self._execute(
            """UPDATE image_embeddings SET claimed_by = NULL, claim_expires_at = NULL
               WHERE claimed_by = %(worker)s AND (%(all)s OR id = ANY(%(ids)s))""",
            worker=worker_id, all=ids is None, ids=ids or [],
        ).rowcount

    def holders(self) -> list[str]:
        """The workers holding leases now, live or expired."""
        rows = self.conn.execute(
            "SELECT DISTINCT claimed_by FROM image_embeddings WHERE claimed_by IS NOT NULL"
        ).fetchall()
        return [holder for (holder,) in rows]

    def leased_elsewhere(self, worker_id: str) -> tuple[int, datetime | None]:
        """Rows still without a vector that other workers hold live leases on, and when the
        last of those leases runs out (a killed worker's rows wait for that)."""
        count, until = self._execute(
            """SELECT count(*), max(claim_expires_at) FROM image_embeddings
               WHERE embedding IS NULL AND claimed_by IS NOT NULL AND claimed_by <> %(worker)s
                 AND claim_expires_at >= now()""",
            worker=worker_id,
        ).fetchone()
        return count, until
