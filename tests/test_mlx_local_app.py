"""The whole local path: sync, `loader embed --backend mlx`, then search in the mlx-local app."""

from __future__ import annotations

import json
import shutil
import traceback

import numpy as np
import pytest
from click.testing import CliRunner

from loader.cli import main as loader_cli
from shared.clip.embedder import MlxClipEmbedder
from shared.store import connect
from shared.settings import Settings

from conftest import WILD

DIM = 24  # the tiny checkpoint's projection width


@pytest.fixture
def library(db_url, tmp_path, tiny_clip):
    """Wild photos synced and embedded by the tiny CLIP through the real CLI."""
    images = tmp_path / "images"
    shutil.copytree(WILD / "photos", images)
    env = {"SUPABASE_DB_URL": db_url, "IMAGES_DIR": str(images), "DATA_DIR": str(tmp_path / "data"),
           "EXPECTED_VECTOR_DIM": str(DIM), "CLIP_MODEL_PATH": str(tiny_clip[0]),
           "REPLICATE_API_TOKEN": ""}
    runner = CliRunner()
    synced = runner.invoke(loader_cli, ["sync"], env=env)
    assert synced.exit_code == 0, synced.output + "".join(traceback.format_exception(*synced.exc_info))
    result = runner.invoke(loader_cli, ["embed", "--backend", "mlx", "--json"], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 5 and summary["shared"] == 1  # coffee.png twice, embedded once
    return Settings(images_dir=images, data_dir=tmp_path / "data", database_url=db_url,
                    expected_vector_dim=DIM, clip_model_path=tiny_clip[0])


def test_backfill_records_the_mlx_model(library):
    with connect(library.database_url) as conn:
        models = conn.execute("SELECT DISTINCT embedding_model FROM image_embeddings").fetchall()
        missing = conn.execute("SELECT count(*) FROM image_embeddings WHERE embedding IS NULL").fetchone()
    assert models == [("mlx:openai/clip-vit-large-patch14",)] and missing == (0,)


def test_mlx_local_search_ranks_by_clip_similarity(library, tiny_clip):
    from mlx_local import create_app

    app = create_app(settings=library)
    embedder = app.extensions["image_browser"].search.embedder
    assert embedder._loaded is not None, "the model is loaded before the first request"
    assert not embedder.supports_images  # a search process loads the text tower only

    query = "a photo of a cat"
    response = app.test_client().get("/api/search", query_string={"q": query, "k": 6})
    assert response.status_code == 200, response.json
    results = response.json["results"]

    reference = MlxClipEmbedder(model_path=tiny_clip[0], expected_dim=DIM, text_only=True)
    text = reference.embed_texts([query])[0]
    with connect(library.database_url) as conn:
        rows = conn.execute("SELECT filename, embedding FROM image_embeddings").fetchall()
    expected = {name: float(np.dot(text, vector.to_numpy())) for name, vector in rows}
    assert sorted(r["filename"] for r in results) == sorted(expected)
    for result in results:
        assert result["similarity"] == pytest.approx(expected[result["filename"]], abs=1e-4)
    similarities = [r["similarity"] for r in results]
    assert similarities == sorted(similarities, reverse=True)
    assert len(set(np.round(similarities, 4))) == 5  # five distinct pictures, one twice


def test_mlx_local_pages_render_with_search_on(library):
    from mlx_local import create_app

    client = create_app(settings=library).test_client()
    page = client.get("/", query_string={"q": "coffee"})
    assert page.status_code == 200
    assert b"coffee" in page.data and b"search is off" not in page.data.lower()
