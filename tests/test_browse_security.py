"""Headers and error answers: a forged Host header is never echoed back."""

from __future__ import annotations

import pytest
from browse_support import WordEmbedder, build_library

from browse import create_app

EVIL = "evil.example"


@pytest.fixture(scope="module")
def app(pg_url, tmp_path_factory):
    settings = build_library(pg_url, tmp_path_factory.mktemp("security"), n_fillers=2)
    app = create_app(settings, embedder=WordEmbedder())
    yield app
    app.extensions["image_browser"].close()


def test_werkzeugs_own_redirects_keep_to_the_path(app):
    # '//' is merged into '/' by a redirect that Werkzeug builds from the Host header.
    response = app.test_client().get("/media/original//etc/passwd", headers={"Host": EVIL})
    assert response.status_code == 308
    assert response.headers["Location"] == "/media/original/etc/passwd"


def test_no_page_carries_the_host_header(app):
    client = app.test_client()
    image_id = client.get("/api/images").get_json()["images"][0]["id"]
    for url in ("/", "/status", f"/image/{image_id}", "/search/image", "/?q=cat", "/nothing",
                "/api/status", "/api/nothing"):
        response = client.get(url, headers={"Host": EVIL})
        assert EVIL not in response.get_data(as_text=True), url
        assert EVIL not in str(response.headers), url
