"""The embedding queue: what is to do for a model, leases, and one vector per content."""

import numpy as np

from shared.store import Catalogue, EmbeddingQueue, ImageRecord


def seed(conn, names_and_content: dict[str, str]) -> None:
    Catalogue(conn).upsert_images([
        ImageRecord(name, 1, 1, 1, content * 64, "PNG", 0, None)
        for name, content in names_and_content.items()
    ])


def test_a_claim_leads_each_content_once_and_carries_its_copies(conn):
    seed(conn, {"a.png": "1", "copy-of-a.png": "1", "b.png": "2"})
    claims = EmbeddingQueue(conn, "m").claim("w1", 10, lease_seconds=60)
    leads = sorted(c.filename for c in claims if c.lead)
    assert leads == ["a.png", "b.png"]
    assert [c.filename for c in claims if not c.lead] == ["copy-of-a.png"]
    assert EmbeddingQueue(conn, "m").claim("w2", 10, lease_seconds=60) == []  # all leased


def test_the_queue_holds_its_model_and_choices(conn):
    seed(conn, {"a.png": "1", "b.png": "2", "c.png": "3"})
    conn.execute("UPDATE image_embeddings SET embedding = %s, embedding_model = 'old' WHERE filename = 'a.png'",
                 (np.ones(768, np.float32),))
    conn.execute("UPDATE image_embeddings SET last_error = 'boom' WHERE filename = 'b.png'")
    assert EmbeddingQueue(conn, "new").count_waiting() == 1  # c only
    assert EmbeddingQueue(conn, "new", reembed=True).count_waiting() == 2  # and a
    assert EmbeddingQueue(conn, "new", retry_failed=True).count_waiting() == 2  # and b
    everything = EmbeddingQueue(conn, "new", reembed=True, retry_failed=True)
    claims = everything.claim("w", 10, lease_seconds=60)
    saved = everything.save("w", [(c.id, np.eye(768, dtype=np.float32)[0]) for c in claims])
    assert sorted(saved) == ["a.png", "b.png", "c.png"]
    models = dict(conn.execute("SELECT filename, embedding_model FROM image_embeddings").fetchall())
    assert set(models.values()) == {"new"}


def test_hidden_rows_wait_and_the_newest_come_first(conn):
    seed(conn, {"old.png": "1", "gone.png": "2", "new.png": "3"})
    conn.execute("UPDATE image_embeddings SET created_at = now() - interval '1 day' "
                 "WHERE filename = 'old.png'")
    Catalogue(conn).hide(["gone.png"])
    queue = EmbeddingQueue(conn, "m")
    assert queue.count_waiting() == 2
    assert [c.filename for c in queue.claim("w", 1, lease_seconds=60)] == ["new.png"]
    assert [c.filename for c in queue.claim("w", 5, lease_seconds=60)] == ["old.png"]


def test_a_moved_file_takes_the_vector_of_its_hidden_twin(conn):
    seed(conn, {"before.png": "1"})
    queue = EmbeddingQueue(conn, "m")
    [claim] = queue.claim("w", 1, lease_seconds=60)
    queue.save("w", [(claim.id, np.eye(768, dtype=np.float32)[3])])
    Catalogue(conn).hide(["before.png"])
    seed(conn, {"after.png": "1"})  # the same content under its new name
    assert queue.fill_shared() == ["after.png"]
    assert queue.claim("w", 5, lease_seconds=60) == []


def test_a_claim_takes_the_free_rows_around_one_another_transaction_has_locked(conn, db_url):
    """FOR UPDATE SKIP LOCKED: a worker never waits on rows another one is busy claiming."""
    from shared.store import connect

    seed(conn, {"a.png": "1", "b.png": "2", "c.png": "3"})
    other = connect(db_url)
    try:
        with other.transaction():
            other.execute("SELECT id FROM image_embeddings WHERE filename = 'a.png' FOR UPDATE")
            # Without SKIP LOCKED the claim would wait for that lock: fail fast instead of hanging.
            conn.execute("SET lock_timeout = '3s'")
            claims = EmbeddingQueue(conn, "m").claim("w1", 10, lease_seconds=60)
            conn.execute("RESET lock_timeout")
    finally:
        other.close()
    assert sorted(c.filename for c in claims) == ["b.png", "c.png"]


def test_a_copy_synced_while_its_twin_is_leased_waits_for_the_twins_vector(conn):
    seed(conn, {"a.png": "1"})
    first = EmbeddingQueue(conn, "m")
    (lead,) = first.claim("w1", 10, lease_seconds=60)
    seed(conn, {"copy-of-a.png": "1"})  # synced while w1 embeds a.png
    assert EmbeddingQueue(conn, "m").claim("w2", 10, lease_seconds=60) == []
    saved = first.save("w1", [(lead.id, np.eye(768, dtype=np.float32)[0])])
    assert sorted(saved) == ["a.png", "copy-of-a.png"]  # one prediction, the copy shares it


def test_a_claim_walks_only_the_waiting_rows_newest_first(conn):
    """Issue 11: with a million rows and the few waiting ones the oldest, the claim must not
    walk every embedded row on its way to them (the partial index holds only waiting rows)."""
    import numpy as np
    from datetime import datetime, timedelta, timezone

    from shared.store import BulkImage, copy_images

    now = datetime.now(timezone.utc)
    copy_images(conn, (BulkImage(i + 1, f"{i}.png", 4, 3, 10, f"{i:064x}", "PNG", 1, None,
                                 None if i < 5 else np.ones(768, np.float32), None, None,
                                 now + timedelta(seconds=i)) for i in range(2000)))
    conn.execute("ANALYZE image_embeddings")

    def walks() -> int:
        conn.execute("SELECT pg_stat_force_next_flush()")
        return conn.execute("""SELECT idx_scan FROM pg_stat_user_indexes
                               WHERE indexrelname = 'image_embeddings_waiting_idx'""").fetchone()[0]

    before = walks()
    conn.execute("SET enable_seqscan = off")  # as the planner chooses on a large table
    try:
        claims = EmbeddingQueue(conn, "m").claim("w", 3, 60)
    finally:
        conn.execute("RESET enable_seqscan")
    assert [c.filename for c in claims] == ["2.png", "3.png", "4.png"]  # the newest 3 of 5
    assert walks() > before
