"""Originals and thumbnails served from local storage: validators that follow the file, legal but
odd names, MIME types, NULs."""

from __future__ import annotations

import hashlib
import os
import shutil
from urllib.parse import quote

import pytest
from browse_support import Picture, WordEmbedder, browse_env, build_library, draw, running_browse
from conftest import WILD

from browse import create_app
from loader.sync import run_sync
from shared.settings import Settings
from shared.storage import open_storage
from shared.store import Catalogue, Schema, connect


def test_an_original_edited_in_place_at_the_same_size_is_sent_again(pg_url, tmp_path):
    """The stored hash is the ETag only while size and mtime are the loader's: an edit that
    keeps the size must not be answered 304 with the old picture."""
    library = build_library(pg_url, tmp_path, n_fillers=0)
    app = create_app(library, embedder=None)
    try:
        client = app.test_client()
        path = library.images_dir / "red-car.jpg"
        before = path.read_bytes()
        old_etag = f'"{hashlib.sha256(before).hexdigest()}"'
        assert client.get("/media/original/red-car.jpg").headers["ETag"] == old_etag

        edited = bytearray(before)
        edited[200:260] = bytes(b ^ 0xFF for b in edited[200:260])  # same size, other bytes
        mtime_ns = path.stat().st_mtime_ns
        path.write_bytes(edited)
        os.utime(path, ns=(mtime_ns, mtime_ns + 2_000_000_000))  # as an editor saving it later
        again = client.get("/media/original/red-car.jpg", headers={"If-None-Match": old_etag})
        assert again.status_code == 200 and again.data == bytes(edited)
        assert again.headers["ETag"] != old_etag
    finally:
        app.extensions["image_browser"].close()


# Legal on Linux and macOS; each once broke sync or the pages.
ODD_NAMES = [
    "new\nline.jpg",
    "back\\slash.jpg",
    "a\\..\\b.jpg",
    "tab\tand\rreturn.jpg",
    "100% sure?.jpg",
    "hash#tag&amp;.jpg",
    "spoof\u202eabc.jpg",
    " spaced out .jpg",
    "%0A.jpg",
    "folder\nwith newline/inside.jpg",
]


def sync_folder(db_url: str, images, data) -> Settings:
    """Run the real sync over `images` into an empty table; settings for serving them."""
    settings = Settings(images_dir=images, data_dir=data, database_url=db_url)
    with connect(db_url) as conn:
        Schema(conn).ensure(768)
        report = run_sync(Catalogue(conn), open_storage(settings), images, jobs=1,
                          max_pixels=settings.max_image_pixels, progress=False)
    assert not report.failed, report.failed
    return settings


@pytest.fixture
def odd_app(db_url, tmp_path):
    images = tmp_path / "images"
    for n, name in enumerate(ODD_NAMES):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        draw(Picture(name, 40 + n, 30, (20 * n, 90, 160), None)).save(images / name, "JPEG")
    settings = sync_folder(db_url, images, tmp_path / "data")
    app = create_app(settings, embedder=WordEmbedder())
    yield app, settings
    app.extensions["image_browser"].close()


def test_legal_odd_file_names_sync_and_are_served(odd_app):
    app, settings = odd_app
    client = app.test_client()
    images = {i["filename"]: i for i in client.get("/api/images?limit=50").get_json()["images"]}
    assert sorted(images) == sorted(ODD_NAMES)  # sync took every one, none refused
    for name, image in images.items():
        original = client.get(image["original_url"])
        assert original.status_code == 200, name
        assert original.data == (settings.images_dir / name).read_bytes(), name
        page = client.get(image["page_url"])
        assert page.status_code == 200, name
        assert f'src="/media/original/{quote(name, safe="/:@!$&()*+,;=")}"'.replace(
            "&", "&amp;") in page.get_data(as_text=True), name  # the hero is the original
        assert client.get(image["thumbnail_url"]).status_code == 200, name


@pytest.mark.parametrize("url", [
    "/media/original/plain.jpg%00", "/media/original/%00", "/media/original/a%00b/c.jpg",
])
def test_a_nul_in_a_file_name_is_a_404_not_a_database_error(odd_app, url):
    response = odd_app[0].test_client().get(url)
    assert response.status_code == 404


# Each format's original as a browser must be told it is (MPO: the JPEG it is).
EXPECTED_TYPES = {
    "hopper_gray.jpg": "image/jpeg", "horse.jpg": "image/png",  # horse.jpg is a PNG inside
    "sugarshack.mpo": "image/jpeg", "delay.png": "image/png",
    "chi.gif": "image/gif", "transparent.webp": "image/webp", "pal8.bmp": "image/bmp",
    "multipage.tif": "image/tiff", "example.avif": "image/avif", "example.heic": "image/heif",
}


def test_a_fresh_server_sends_each_original_with_its_type_from_the_first_request(db_url, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in EXPECTED_TYPES:
        shutil.copy(WILD / "formats" / name, images / name)
    settings = sync_folder(db_url, images, tmp_path / "data")
    with running_browse(browse_env(settings)) as live:
        # Nothing has been decoded in this process yet: the first request is an original.
        for name, expected in EXPECTED_TYPES.items():
            status, headers, body = live.get(f"/media/original/{quote(name)}")
            assert status == 200 and headers["Content-Type"] == expected, (name, headers)
            assert body == (images / name).read_bytes()
