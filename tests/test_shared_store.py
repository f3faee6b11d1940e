import numpy as np
import pytest

from shared.database import connect
from shared.store import ImageRecord, ImageStore, SchemaError


def record(name: str, sha: str = "a" * 64, **kw) -> ImageRecord:
    values = dict(width=4, height=3, byte_size=10, sha256=sha, format="PNG", mtime_ns=1, thumbnail_key=None)
    values.update(kw)
    return ImageRecord(filename=name, **values)


def test_ensure_schema_creates_table_and_reports_pgvector(db_url):
    store = ImageStore(connect(db_url))
    report = store.ensure_schema(768)
    assert report.created and report.dimensions == 768
    assert report.pgvector_version.startswith("0.8")
    again = store.ensure_schema(768)
    assert not again.created
    assert store.embedding_dimensions() == 768


def test_upgrade_of_an_older_table_keeps_its_rows(db_url):
    conn = connect(db_url)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE TABLE image_embeddings (id serial PRIMARY KEY, filename text, embedding vector(3))")
    conn.execute("INSERT INTO image_embeddings (filename, embedding) VALUES ('old.jpg', '[1,0,0]')")
    store = ImageStore(conn)
    store.ensure_schema(3)
    row = conn.execute("SELECT filename, embedding, width, attempts FROM image_embeddings").fetchone()
    assert row[0] == "old.jpg" and row[1].to_list() == [1, 0, 0]
    assert row[2] is None and row[3] == 0
    assert store.counts() == {"images": 1, "embedded": 1, "waiting": 0, "failed": 0}


def test_dimension_mismatch_is_refused_and_changes_nothing(db_url):
    conn = connect(db_url)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE TABLE image_embeddings (filename text, embedding vector(512))")
    with pytest.raises(SchemaError) as err:
        ImageStore(conn).ensure_schema(768)
    assert "512" in str(err.value) and "768" in str(err.value)
    columns = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'image_embeddings'"
    ).fetchone()[0]
    assert columns == 2


def test_changed_content_drops_the_stale_embedding(store):
    store.upsert_images([record("a.png", sha="1" * 64)])
    store.conn.execute(
        "UPDATE image_embeddings SET embedding = %s, embedding_model = 'm'", (np.ones(768, np.float32),)
    )
    store.upsert_images([record("a.png", sha="1" * 64, mtime_ns=2)])  # same content: kept
    assert store.counts()["embedded"] == 1
    store.upsert_images([record("a.png", sha="2" * 64, width=8)])  # new content: dropped
    assert store.counts() == {"images": 1, "embedded": 0, "waiting": 1, "failed": 0}
    assert store.conn.execute("SELECT width, embedding_model FROM image_embeddings").fetchone() == (8, None)


def test_delete_returns_only_thumbnails_nobody_uses(store):
    store.upsert_images([
        record("a.png", sha="1" * 64, thumbnail_key="t1"),
        record("copy of a.png", sha="1" * 64, thumbnail_key="t1"),
        record("b.png", sha="2" * 64, thumbnail_key="t2"),
    ])
    assert store.delete_images(["a.png", "b.png"]) == ["t2"]
    assert list(store.known_files()) == ["copy of a.png"]
