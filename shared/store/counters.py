"""Counts kept by the database itself, so that no page counts a million rows to show a number.

`image_browser_counts` holds the library's totals (shown, embedded, waiting, failed, hidden)
and each camera's count of shown photos. Statement-level triggers on `image_embeddings` add
each statement's difference, computed from its transition tables (the rows before and after),
so every write keeps them true: sync, the backfill, hiding and restoring, pruning, a bulk COPY,
and another tool's SQL. A statement that changes nothing counted (a lease, a thumbnail)
writes nothing. The counter rows are locked in key order at the end of each statement, so two
writers can wait for each other but never deadlock; the catalogue's writes are one statement
per transaction for that reason.

The counts are rebuilt from the table whenever the triggers are installed (a new table, an
upgrade), under a lock that holds writers back meanwhile.
"""

from __future__ import annotations

import psycopg

COUNTS_TABLE = "image_browser_counts"
TRIGGERS = ("image_browser_count_inserts", "image_browser_count_updates",
            "image_browser_count_deletes", "image_browser_count_truncates")

_CREATE_TABLE = """CREATE TABLE IF NOT EXISTS image_browser_counts (
    scope text NOT NULL,  -- 'library' (key ''), or 'camera' (key: the camera as shown)
    key text NOT NULL,
    images bigint NOT NULL DEFAULT 0,  -- shown: the file is in the folder
    embedded bigint NOT NULL DEFAULT 0,
    waiting bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    hidden bigint NOT NULL DEFAULT 0,  -- gone from the folder, kept for its return
    PRIMARY KEY (scope, key)
)"""

# One row per changed row, counted +1 (after) or -1 (before): {source} names where from.
_CHANGED = """SELECT {sign} AS sign, missing_since IS NULL AS shown,
                 embedding IS NOT NULL AS vector, last_error IS NOT NULL AS error, camera
              FROM {source}"""

# Adds the differences of `changed` to the counters, in key order, skipping zeros.
_APPLY = """WITH changed AS ({changed}),
deltas AS (
    SELECT 'library' AS scope, '' AS key,
           coalesce(sum(sign) FILTER (WHERE shown), 0) AS images,
           coalesce(sum(sign) FILTER (WHERE shown AND vector), 0) AS embedded,
           coalesce(sum(sign) FILTER (WHERE shown AND NOT vector AND NOT error), 0) AS waiting,
           coalesce(sum(sign) FILTER (WHERE shown AND NOT vector AND error), 0) AS failed,
           coalesce(sum(sign) FILTER (WHERE NOT shown), 0) AS hidden
    FROM changed
    UNION ALL
    SELECT 'camera', camera, coalesce(sum(sign) FILTER (WHERE shown), 0), 0, 0, 0, 0
    FROM changed WHERE camera IS NOT NULL GROUP BY camera)
INSERT INTO image_browser_counts AS c (scope, key, images, embedded, waiting, failed, hidden)
SELECT scope, key, images, embedded, waiting, failed, hidden FROM deltas
WHERE (images, embedded, waiting, failed, hidden) <> (0, 0, 0, 0, 0)
ORDER BY scope, key
ON CONFLICT (scope, key) DO UPDATE SET
    images = c.images + EXCLUDED.images, embedded = c.embedded + EXCLUDED.embedded,
    waiting = c.waiting + EXCLUDED.waiting, failed = c.failed + EXCLUDED.failed,
    hidden = c.hidden + EXCLUDED.hidden"""


def _function(name: str, changed: str) -> str:
    return f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_APPLY.format(changed=changed)};
    RETURN NULL;
END $$"""


_FUNCTIONS = (
    _function("image_browser_count_inserts", _CHANGED.format(sign=1, source="new_rows")),
    _function("image_browser_count_updates",
              _CHANGED.format(sign=1, source="new_rows") + " UNION ALL "
              + _CHANGED.format(sign=-1, source="old_rows")),
    _function("image_browser_count_deletes", _CHANGED.format(sign=-1, source="old_rows")),
    """CREATE OR REPLACE FUNCTION image_browser_count_truncates() RETURNS trigger
       LANGUAGE plpgsql AS $$ BEGIN DELETE FROM image_browser_counts; RETURN NULL; END $$""",
)

_TRIGGERS = (
    """CREATE TRIGGER image_browser_count_inserts AFTER INSERT ON image_embeddings
       REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
       EXECUTE FUNCTION image_browser_count_inserts()""",
    """CREATE TRIGGER image_browser_count_updates AFTER UPDATE ON image_embeddings
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
       EXECUTE FUNCTION image_browser_count_updates()""",
    """CREATE TRIGGER image_browser_count_deletes AFTER DELETE ON image_embeddings
       REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
       EXECUTE FUNCTION image_browser_count_deletes()""",
    """CREATE TRIGGER image_browser_count_truncates AFTER TRUNCATE ON image_embeddings
       FOR EACH STATEMENT EXECUTE FUNCTION image_browser_count_truncates()""",
)


def install_counters(conn: psycopg.Connection) -> bool:
    """Create the counts table, its functions and triggers, inside the caller's transaction;
    when any trigger was missing, count the table again. Returns whether it recounted."""
    conn.execute(_CREATE_TABLE)
    for statement in _FUNCTIONS:
        conn.execute(statement)
    present = {name for (name,) in conn.execute(
        """SELECT tgname FROM pg_trigger
           WHERE tgrelid = 'image_embeddings'::regclass AND tgname = ANY(%s)""",
        (list(TRIGGERS),)).fetchall()}
    if present == set(TRIGGERS):
        return False
    # Writers wait (readers do not) from here until the caller commits: no change is lost
    # between the count and the triggers.
    conn.execute("LOCK TABLE image_embeddings IN SHARE ROW EXCLUSIVE MODE")
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name} ON image_embeddings")
    for statement in _TRIGGERS:
        conn.execute(statement)
    recount(conn)
    return True


def recount(conn: psycopg.Connection) -> None:
    """Count every row again into the counters (the caller holds writers back)."""
    conn.execute("DELETE FROM image_browser_counts")
    conn.execute(_APPLY.format(changed=_CHANGED.format(sign=1, source="image_embeddings")))
