"""The browse JSON API and media routes through Flask's test client, on a real Postgres."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time
from datetime import datetime

import pytest
from browse_support import HOSTILE, WordEmbedder, build_library, png_bytes

from browse import create_app
from shared.photo_metadata import PhotoMetadata
from shared.settings import R2Settings, Settings
from shared.store import Catalogue, ImageRecord, Schema, connect

MAX_UPLOAD = 64 * 1024
FROM_SETTINGS = "build the embedder from the settings"


def make_app(settings: Settings, embedder=None, **web):
    """An app on these settings with small limits; closed by the caller."""
    web = {"page_size": 10, "max_upload_bytes": MAX_UPLOAD, **web}
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))
    if embedder == FROM_SETTINGS:
        return create_app(settings)
    return create_app(settings, embedder=embedder)


@pytest.fixture(scope="module")
def library(pg_url, tmp_path_factory) -> Settings:
    """One seeded library for the read-only tests of this module."""
    return build_library(pg_url, tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def app(library):
    app = make_app(library, WordEmbedder())
    yield app
    app.extensions["image_browser"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def ids_by_name(client) -> dict[str, int]:
    images = client.get("/api/images?limit=200").get_json()["images"]
    return {image["filename"]: image["id"] for image in images}


# --- list, one image ---------------------------------------------------------------------


def test_list_walks_every_image_once_newest_taken_first_by_keyset(client, library):
    seen, cursor, pages = [], None, 0
    while pages < 50:  # a cursor that never ends fails below instead of looping forever
        response = client.get("/api/images", query_string={"limit": 7, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        body = response.get_json()
        seen += body["images"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    with connect(library.database_url) as conn:
        expected = [r[0] for r in conn.execute(
            "SELECT id FROM image_embeddings ORDER BY taken_at DESC, id DESC").fetchall()]
    assert [image["id"] for image in seen] == expected
    assert len(expected) == 42 and pages == 6  # 42 rows in pages of 7


def test_keyset_cursor_is_stable_when_newer_rows_arrive(client, library):
    first = client.get("/api/images?limit=5").get_json()
    with connect(library.database_url) as conn:
        taken = PhotoMetadata(datetime(2100, 1, 1), None, False)  # newer than every other photo
        Catalogue(conn).upsert_images([ImageRecord("arrived-later.jpg", 10, 10, 1, "0" * 64, "JPEG", 1, None, taken)])
    try:
        second = client.get(f"/api/images?limit=5&cursor={first['next_cursor']}").get_json()
        everything = client.get("/api/images?limit=200").get_json()["images"]
        order = [image["id"] for image in everything if image["filename"] != "arrived-later.jpg"]
        assert [i["id"] for i in first["images"] + second["images"]] == order[:10]
    finally:
        with connect(library.database_url) as conn:
            Catalogue(conn).delete_images(["arrived-later.jpg"])


def test_one_image_has_its_details_and_local_urls(client):
    image_id = ids_by_name(client)["blue-sea.jpg"]
    image = client.get(f"/api/images/{image_id}").get_json()["image"]
    assert (image["width"], image["height"], image["format"]) == (600, 900, "JPEG")
    assert image["thumbnail_url"] == f"/media/thumb/{image['sha256'][:2]}/{image['sha256']}.jpg"
    assert image["original_url"] == "/media/original/blue-sea.jpg"
    assert image["embedded"] is True


def test_unknown_image_and_route_are_json_404s(client):
    for url in ("/api/images/999999", "/api/images/999999/similar", "/api/nothing-here"):
        response = client.get(url)
        assert response.status_code == 404 and response.is_json
        assert response.get_json()["error"]["status"] == 404


@pytest.mark.parametrize("query", [
    "limit=0", "limit=201", "limit=ten", "cursor=abc", "cursor=1.2.3", "cursor=u.x", "cursor=x.1",
    "cursor=99999999999999999999999.1",  # beyond any datetime
    "cursor=1.99999999999999999999", "cursor=u.9223372036854775808",  # beyond a bigint
    "cursor=%D9%A3.1",  # a digit, but not an ASCII one
])
def test_bad_page_parameters_are_json_400s(client, query):
    response = client.get(f"/api/images?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"]


# --- search ------------------------------------------------------------------------------


def test_text_search_puts_the_described_image_first_with_its_similarity(client):
    body = client.get("/api/search", query_string={"q": "red bicycle in the snow", "k": 5}).get_json()
    names = [r["filename"] for r in body["results"]]
    assert names[0] == "red-bicycle-snow.jpg" and names[1] == "red-car.jpg"
    assert body["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    sims = [r["similarity"] for r in body["results"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == 5
    assert body["model"] == "test/word-vectors"


@pytest.mark.parametrize("query", ["k=0", "k=201", "k=many", "q=", "q=%20%20"])
def test_search_refuses_out_of_range_k_and_empty_queries(client, query):
    if "q=" not in query:
        query += "&q=cat"
    response = client.get(f"/api/search?{query}")
    assert response.status_code == 400 and response.is_json


def test_similar_images_use_the_stored_embedding_without_a_model_call(app, client):
    ids = ids_by_name(client)
    embedder = app.extensions["image_browser"].search.embedder
    before = embedder.calls
    body = client.get(f"/api/images/{ids['red-bicycle-snow.jpg']}/similar?k=3").get_json()
    assert embedder.calls == before
    names = [r["filename"] for r in body["results"]]
    assert "red-bicycle-snow.jpg" not in names and names[0] == "red-car.jpg" and len(names) == 3
    assert body["results"][0]["similarity"] == pytest.approx(1 / 6**0.5, abs=1e-3)


def test_similar_of_an_image_without_embedding_says_so(client):
    response = client.get(f"/api/images/{ids_by_name(client)['waiting.jpg']}/similar")
    assert response.status_code == 409 and "no embedding" in response.get_json()["error"]["message"]


def test_search_by_uploaded_image_finds_the_same_colour(client):
    for how in ("multipart", "body"):
        if how == "multipart":
            from io import BytesIO

            response = client.post("/api/search/image?k=3",
                                   data={"image": (BytesIO(png_bytes((10, 20, 240))), "any-name.txt")})
        else:
            response = client.post("/api/search/image?k=3", data=png_bytes((10, 20, 240)),
                                   content_type="application/octet-stream")
        assert response.status_code == 200, response.data
        assert response.get_json()["results"][0]["filename"] == "blue-sea.jpg"


def test_uploads_are_limited_in_size_and_checked_by_content(client):
    too_big = client.post("/api/search/image", data=b"\xff" * (MAX_UPLOAD + 1),
                          content_type="image/jpeg")
    assert too_big.status_code == 413 and too_big.is_json
    not_image = client.post("/api/search/image", data=b"<html>not a picture</html>", content_type="image/png")
    assert not_image.status_code == 415 and "not an image" in not_image.get_json()["error"]["message"]
    empty = client.post("/api/search/image", data=b"", content_type="image/png")
    assert empty.status_code == 400
    from io import BytesIO

    no_field = client.post("/api/search/image", data={"other": (BytesIO(b"x"), "x.png")})
    assert no_field.status_code == 400


def test_upload_page_rejects_a_text_file_named_like_an_image(client):
    from io import BytesIO

    response = client.post("/search/image", data={"image": (BytesIO(b"hello"), "photo.jpg")})
    assert response.status_code == 415
    assert b"not an image" in response.data


# --- status and errors of the embedder ----------------------------------------------------


def test_status_counts_images_waiting_for_embeddings(client):
    status = client.get("/api/status").get_json()
    assert status["counts"]["images"] == 42 and status["counts"]["waiting"] == 1
    assert status["search_available"] is True and status["warnings"] == []
    page = client.get("/status")
    assert b'id="count-waiting">1<' in page.data


def test_no_embedder_keeps_browsing_and_says_why_search_is_off(library):
    app = make_app(dataclasses.replace(library, embedder="replicate"), FROM_SETTINGS)
    try:
        client = app.test_client()
        assert client.get("/api/images").status_code == 200
        response = client.get("/api/search?q=cat")
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "search_unavailable"
        home = client.get("/").data.decode()
        assert "Search is off" in home and "REPLICATE_API_TOKEN" in home
    finally:
        app.extensions["image_browser"].close()


def test_dimension_mismatch_is_a_visible_warning_and_search_is_refused(library):
    app = make_app(library, WordEmbedder(dimensions=512))
    try:
        client = app.test_client()
        assert "512-dimensional" in client.get("/").data.decode()
        assert "512-dimensional" in client.get("/status").data.decode()
        assert client.get("/api/status").get_json()["warnings"]
        assert client.get("/api/search?q=cat").status_code == 503
    finally:
        app.extensions["image_browser"].close()


def test_slow_embedder_times_out_without_blocking_other_requests(library):
    app = make_app(library, WordEmbedder(delay_s=3.0), embed_timeout_s=0.5)
    try:
        client = app.test_client()
        other: dict = {}

        def browse_meanwhile() -> None:
            time.sleep(0.1)
            started = time.perf_counter()
            other["status"] = app.test_client().get("/api/images").status_code
            other["seconds"] = time.perf_counter() - started

        thread = threading.Thread(target=browse_meanwhile)
        thread.start()
        started = time.perf_counter()
        response = client.get("/api/search?q=cat")
        elapsed = time.perf_counter() - started
        thread.join(timeout=30)
        assert not thread.is_alive(), "the other request never finished"
        assert response.status_code == 504 and response.get_json()["error"]["code"] == "embedder_timeout"
        assert elapsed < 2.0
        assert other == {"status": 200, "seconds": pytest.approx(0, abs=1.0)}
        page = client.get("/?q=cat")
        assert page.status_code == 504 and b"timed out" in page.data
    finally:
        app.extensions["image_browser"].close()


def test_embedder_failure_is_503_and_never_shows_the_token(library):
    secret = "r8_super_secret_token_value"
    settings = dataclasses.replace(library, replicate_api_token=secret)
    app = make_app(settings, WordEmbedder(error=f"401 Unauthorized for token {secret}"))
    try:
        client = app.test_client()
        response = client.get("/api/search?q=cat")
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "embedder_failed"
        for url in ("/api/search?q=cat", "/?q=cat", "/status", "/api/status", "/"):
            assert secret not in client.get(url).data.decode()
    finally:
        app.extensions["image_browser"].close()


# --- media: caching, traversal ----------------------------------------------------------


# --- photos as photos: dates, cameras, places, folders, filters (issue 10) ---------------------


def walk(client, url: str, **params) -> list[dict]:
    """Every image of /api/images with these parameters, page by page."""
    seen, cursor = [], None
    while True:
        query = {**params, "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = client.get(url, query_string=query).get_json()
        seen += body["images"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_rows_carry_date_taken_camera_place_and_folder(client):
    images = {i["filename"]: i for i in walk(client, "/api/images")}
    vespa = images["Italy/Rome/vespa.jpg"]
    assert vespa["taken_at"] == "2019-07-14T10:00:00+02:00" and vespa["taken_at_is_fallback"] is False
    assert (vespa["camera"], vespa["folder"]) == ("FUJIFILM X-T3", "Italy/Rome")
    assert (vespa["latitude"], vespa["longitude"]) == (pytest.approx(41.89021, abs=1e-5),
                                                       pytest.approx(12.49223, abs=1e-5))
    assert images["Italy/beach.jpg"]["taken_at"] == "2019-08-02T18:30:00"  # no offset recorded
    assert images["Italy/beach.jpg"]["camera"] == "Apple iPhone X"
    cat = images["cat.jpg"]  # no EXIF: its file's date, no camera, no place, the top folder
    assert cat["taken_at_is_fallback"] is True and cat["taken_at"]
    assert (cat["camera"], cat["latitude"], cat["longitude"], cat["folder"]) == (None, None, None, "")


@pytest.mark.parametrize("params, expected", [
    ({"folder": "Italy"}, {"Italy/Rome/vespa.jpg", "Italy/Rome/fontana.jpg", "Italy/beach.jpg"}),
    ({"folder": "Italy/Rome/"}, {"Italy/Rome/vespa.jpg", "Italy/Rome/fontana.jpg"}),
    ({"camera": "Apple iPhone X"}, {"Italy/beach.jpg", "Japan/kyoto.jpg"}),
    ({"has_location": "true", "taken_before": "2018-12-31"}, {"Japan/kyoto.jpg"}),
    ({"taken_after": "2019-07-14", "taken_before": "2019-07-20"},
     {"Italy/Rome/vespa.jpg", "Italy/Rome/fontana.jpg", "Italy2/not-italy.jpg"}),
    ({"folder": "Italy", "has_location": "false"}, {"Italy/Rome/fontana.jpg"}),
    ({"camera": "FUJIFILM X-T3", "taken_after": "2019-07-15"}, set()),
])
def test_filters_combine_and_every_page_holds_to_them(client, params, expected):
    seen = walk(client, "/api/images", **params)
    assert [i["filename"] for i in seen if i["filename"] in expected] == [i["filename"] for i in seen]
    assert {i["filename"] for i in seen} == expected and len(seen) == len(expected)
    taken = [(i["taken_at"][:19], i["id"]) for i in seen]
    assert taken == sorted(taken, reverse=True)  # newest taken first, ties by id


def test_the_timeline_is_newest_taken_first_with_ties_in_id_order(client):
    seen = walk(client, "/api/images")
    rome = [i for i in seen if i["folder"] == "Italy/Rome"]  # both taken 2019-07-14 10:00:00
    assert [i["id"] for i in rome] == sorted((i["id"] for i in rome), reverse=True)
    order = [i["filename"] for i in seen if i["taken_at_is_fallback"] is False]
    assert order == ["Italy/beach.jpg", "Italy2/not-italy.jpg", *[i["filename"] for i in rome],
                     "Japan/kyoto.jpg"]


def test_filters_narrow_text_search_similar_images_and_search_by_image(client):
    found = client.get("/api/search?q=red+bicycle+snow&k=10&folder=Italy").get_json()
    assert {r["folder"] for r in found["results"]} == {"Italy", "Italy/Rome"}
    assert len(found["results"]) == 3 and found["filters"] == {"folder": "Italy"}
    ids = ids_by_name(client)
    similar = client.get(f"/api/images/{ids['red-car.jpg']}/similar?k=10&camera=Apple+iPhone+X")
    assert {r["filename"] for r in similar.get_json()["results"]} == {"Italy/beach.jpg", "Japan/kyoto.jpg"}
    upload = client.post("/api/search/image?has_location=true",
                         data={"image": (io.BytesIO(png_bytes((20, 60, 220))), "q.png")})
    assert {r["filename"] for r in upload.get_json()["results"]} == {
        "Italy/Rome/vespa.jpg", "Italy/beach.jpg", "Japan/kyoto.jpg"}
    form = client.post("/api/search/image", data={"image": (io.BytesIO(png_bytes((20, 60, 220))), "q.png"),
                                                  "folder": "Japan"})
    assert [r["filename"] for r in form.get_json()["results"]] == ["Japan/kyoto.jpg"]


@pytest.mark.parametrize("query", [
    "taken_after=yesterday", "taken_after=2019-13-01", "taken_before=2019-02-30", "taken_after=2019-1-1",
    "taken_after=%D9%A2%D9%A0%D9%A1%D9%A9-01-01",  # Arabic-Indic digits
    "taken_after=2020-01-01&taken_before=2019-01-01", "has_location=maybe", "folder=a%00b",
    "camera=%00", "folder=" + "x" * 1001, "cursor=u.1&taken_after=0000-01-01",
])
def test_bad_filters_are_400s_naming_the_parameter(client, query):
    for url in ("/api/images", "/api/search?q=cat", "/", "/?q=cat", "/folders", "/api/folders"):
        response = client.get(f"{url}{'&' if '?' in url else '?'}{query}")
        assert response.status_code == 400, (url, query)
        name = query.split("=")[0] if "cursor" not in query else "taken_after"
        assert name in response.get_data(as_text=True), (url, query)


def test_folders_are_albums_with_counts_and_covers(client):
    top = client.get("/api/folders").get_json()
    by_name = {f["name"]: f for f in top["folders"]}
    assert {n: f["images"] for n, f in by_name.items()} == {"Italy": 3, "Italy2": 1, "Japan": 1}
    assert by_name["Italy"]["cover"]["filename"] == "Italy/beach.jpg"  # the newest taken
    assert top["images_here"] == 37
    rome = client.get("/api/folders?folder=Italy").get_json()
    assert [(f["name"], f["folder"], f["images"]) for f in rome["folders"]] == [("Rome", "Italy/Rome", 2)]
    assert rome["images_here"] == 1
    cameras = client.get("/api/cameras").get_json()["cameras"]
    assert cameras == [{"camera": "Apple iPhone X", "images": 2}, {"camera": "FUJIFILM X-T3", "images": 2}]


def test_folder_lists_are_reused_for_summary_ttl_s_and_their_cache_stays_small(library):
    cached, fresh = make_app(library, summary_ttl_s=3600), make_app(library, summary_ttl_s=0)
    try:
        before = cached.test_client().get("/api/folders").get_json()["folders"]
        cameras = cached.test_client().get("/api/cameras").get_json()["cameras"]
        zeta = PhotoMetadata(datetime(2000, 1, 1), None, False, camera_model="Zeta Cam")
        with connect(library.database_url) as conn:
            Catalogue(conn).upsert_images([ImageRecord("Zeta/z.jpg", 1, 1, 1, "d" * 64, "JPEG", 1, None, zeta)])
        assert cached.test_client().get("/api/folders").get_json()["folders"] == before
        # Cameras are counted by the database (issue 11): never stale, cache or not.
        assert {"camera": "Zeta Cam", "images": 1} in cached.test_client().get(
            "/api/cameras").get_json()["cameras"]
        assert len(cameras) + 1 == len(cached.test_client().get("/api/cameras").get_json()["cameras"])
        assert "Zeta" in [f["name"] for f in fresh.test_client().get("/api/folders").get_json()["folders"]]
        assert {"camera": "Zeta Cam", "images": 1} in fresh.test_client().get("/api/cameras").get_json()["cameras"]
        browse = cached.extensions["image_browser"]
        with cached.test_request_context():
            for i in range(300):  # e.g. crafted ?folder= values
                browse.folder_list(f"nowhere/{i}")
        assert len(browse._folders) <= 256
    finally:
        with connect(library.database_url) as conn:
            Catalogue(conn).delete_images(["Zeta/z.jpg"])
        cached.extensions["image_browser"].close()
        fresh.extensions["image_browser"].close()


def test_thumbnails_are_cacheable_forever_by_content_hash(client):
    image = client.get(f"/api/images/{ids_by_name(client)['cat.jpg']}").get_json()["image"]
    response = client.get(image["thumbnail_url"])
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.headers["ETag"] == f'"{image["sha256"]}"'
    cache = response.headers["Cache-Control"]
    assert "immutable" in cache and "max-age=31536000" in cache and "public" in cache
    again = client.get(image["thumbnail_url"], headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_originals_carry_their_sha256_as_etag(client, library):
    image = client.get(f"/api/images/{ids_by_name(client)['red-car.jpg']}").get_json()["image"]
    response = client.get(image["original_url"])
    data = (library.images_dir / "red-car.jpg").read_bytes()
    assert response.status_code == 200 and response.data == data
    assert response.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert "max-age" in response.headers["Cache-Control"]
    assert client.get(image["original_url"], headers={"If-None-Match": f'"{image["sha256"]}"'}).status_code == 304


def test_hostile_file_name_is_served_and_shown_as_text(client):
    home = client.get("/?limit=200").data.decode()
    assert "<img src=x" not in home
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in home
    image = client.get(f"/api/images/{ids_by_name(client)[HOSTILE]}").get_json()["image"]
    assert image["filename"] == HOSTILE
    assert client.get(image["original_url"]).status_code == 200  # the quoted URL reaches the file


@pytest.fixture
def hostile_rows(library, tmp_path):
    """Rows a compromised or stale database might hold, naming files outside the library."""
    secret = library.images_dir.parent / "secret.jpg"
    secret.write_bytes(b"TOP-SECRET-BYTES")
    (library.images_dir / "link-out.jpg").symlink_to(secret)
    (library.images_dir / "dir-link").symlink_to(library.images_dir.parent)
    thumb_dir = library.thumbnails_dir / "ab"
    thumb_dir.mkdir(parents=True, exist_ok=True)
    thumb_link = thumb_dir / ("ab" + "0" * 62 + ".jpg")
    thumb_link.symlink_to(secret)
    names = ["link-out.jpg", "../secret.jpg", "dir-link/secret.jpg", str(secret), ".hidden.jpg"]
    with connect(library.database_url) as conn:
        Catalogue(conn).upsert_images(
            [ImageRecord(n, 1, 1, 16, "1" * 64, "JPEG", 1, None) for n in names])
    yield
    with connect(library.database_url) as conn:
        Catalogue(conn).delete_images(names)
    for link in (library.images_dir / "link-out.jpg", library.images_dir / "dir-link", thumb_link):
        link.unlink()
    secret.unlink()


@pytest.mark.parametrize("url", [
    "/media/original/link-out.jpg",
    "/media/original/../secret.jpg",
    "/media/original/%2e%2e/secret.jpg",
    "/media/original/%2E%2E%2Fsecret.jpg",
    "/media/original/..%5csecret.jpg",
    "/media/original/dir-link/secret.jpg",
    "/media/original//etc/passwd",
    "/media/original/%2Fetc%2Fpasswd",
    "/media/original/.hidden.jpg",
    "/media/original/images/../../secret.jpg",
    "/media/thumb/ab/ab" + "0" * 62 + ".jpg",
    "/media/thumb/../secret.jpg",
    "/media/thumb/%2e%2e/%2e%2e/secret.jpg",
    "/media/thumb//etc/passwd",
])
def test_no_request_reads_outside_the_image_folders(client, hostile_rows, url):
    response = client.get(url, follow_redirects=True)  # werkzeug redirects '//' to '/' first
    assert response.status_code == 404
    assert b"TOP-SECRET" not in response.data and b"root:" not in response.data


def test_secret_is_readable_by_path_so_the_traversal_test_can_fail(library, hostile_rows):
    # The guard, not a missing file, is what refuses the requests above.
    assert (library.images_dir / "link-out.jpg").read_bytes() == b"TOP-SECRET-BYTES"
    assert os.path.exists(library.images_dir / ".." / "secret.jpg")


# --- headers, R2 -------------------------------------------------------------------------


def test_every_response_has_a_restrictive_csp(client):
    for url in ("/", "/api/images", "/status", "/api/nothing"):
        csp = client.get(url).headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "object-src 'none'" in csp


def test_r2_mode_links_to_image_base_url(settings):
    r2 = R2Settings(account_id="acct", access_key_id="key", secret_access_key="r2-secret-value",
                    bucket="photos", prefix="lib/", endpoint_url="http://127.0.0.1:9")
    settings = dataclasses.replace(settings, r2=r2, image_base_url="https://img.example.com/")
    with connect(settings.database_url) as conn:
        Schema(conn).ensure(768)
        Catalogue(conn).upsert_images([ImageRecord("trip/a b.jpg", 40, 30, 9, "c" * 64, "JPEG", 1, "cc/" + "c" * 64 + ".jpg")])
    app = make_app(settings, None)
    try:
        client = app.test_client()
        image = client.get("/api/images").get_json()["images"][0]
        assert image["original_url"] == "https://img.example.com/lib/trip/a%20b.jpg"
        assert image["thumbnail_url"] == f"https://img.example.com/lib/.thumbnails/cc/{'c' * 64}.jpg"
        home = client.get("/")
        assert f'src="https://img.example.com/lib/.thumbnails/cc/{"c" * 64}.jpg"' in home.data.decode()
        assert "https://img.example.com" in home.headers["Content-Security-Policy"]
        assert "r2-secret-value" not in home.data.decode()
        assert client.get(f"/media/thumb/cc/{'c' * 64}.jpg").status_code == 404
        assert client.get("/media/original/trip/a%20b.jpg").status_code == 404
    finally:
        app.extensions["image_browser"].close()


def test_the_app_checks_the_schema_and_never_creates_it(settings):
    from shared.store import SchemaError

    with pytest.raises(SchemaError, match="loader ensure-schema"):
        create_app(settings, embedder=None)
    with connect(settings.database_url) as conn:
        assert not Schema(conn).table_exists()


def test_each_request_gives_its_connection_back(app):
    client = app.test_client()
    pool = app.extensions["image_browser"].pool
    for url in ("/", "/api/images", "/status", "/api/status", "/?q=cat", "/api/images/999999"):
        client.get(url)
        assert pool.stats()["lent"] == 0, url  # nothing still lent out

