"""The table's schema: created, upgraded in place, versioned, and checked without changes."""

import pytest

from shared.store import SCHEMA_VERSION, Catalogue, Schema, SchemaError, connect


def test_ensure_creates_table_and_reports_pgvector(db_url):
    schema = Schema(connect(db_url))
    report = schema.ensure(768)
    assert report.created and report.dimensions == 768
    assert report.pgvector_version.startswith("0.8")
    again = schema.ensure(768)
    assert not again.created
    assert schema.embedding_dimensions() == 768
    assert schema.version() == SCHEMA_VERSION


def test_upgrade_of_an_older_table_keeps_its_rows(db_url):
    conn = connect(db_url)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE TABLE image_embeddings (id serial PRIMARY KEY, filename text, embedding vector(3))")
    conn.execute("INSERT INTO image_embeddings (filename, embedding) VALUES ('old.jpg', '[1,0,0]')")
    assert "older" in Schema(conn).check().problem
    Schema(conn).ensure(3)
    row = conn.execute("SELECT filename, embedding, width, attempts FROM image_embeddings").fetchone()
    assert row[0] == "old.jpg" and row[1].to_list() == [1, 0, 0]
    assert row[2] is None and row[3] == 0
    assert Catalogue(conn).counts().as_dict() == {"images": 1, "embedded": 1, "waiting": 0, "failed": 0}
    assert Schema(conn).check().problem is None


def test_dimension_mismatch_is_refused_and_changes_nothing(db_url):
    conn = connect(db_url)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE TABLE image_embeddings (filename text, embedding vector(512))")
    with pytest.raises(SchemaError) as err:
        Schema(conn).ensure(768)
    assert "512" in str(err.value) and "768" in str(err.value)
    columns = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'image_embeddings'"
    ).fetchone()[0]
    assert columns == 2


def test_a_database_upgraded_by_newer_code_is_refused_with_both_versions(conn):
    conn.execute("UPDATE image_browser_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError) as err:
        Schema(conn).ensure(768)
    message = str(err.value)
    assert f"version {SCHEMA_VERSION + 1}" in message and f"({SCHEMA_VERSION})" in message
    assert conn.execute("SELECT version FROM image_browser_schema").fetchone()[0] == SCHEMA_VERSION + 1
    assert "newer" in Schema(conn).check().problem


def test_check_names_the_command_when_there_is_no_table(db_url):
    state = Schema(connect(db_url)).check()
    assert "loader ensure-schema" in state.problem and state.dimensions is None


def test_a_fresh_connection_knows_vectors_once_the_extension_exists(db_url):
    import numpy as np

    Schema(connect(db_url)).ensure(768)
    conn = connect(db_url)
    conn.execute("INSERT INTO image_embeddings (filename, embedding) VALUES ('a', %s)",
                 (np.ones(768, np.float32),))
    value = conn.execute("SELECT embedding FROM image_embeddings").fetchone()[0]
    assert value.to_numpy().shape == (768,)  # a pgvector Vector, not a string
