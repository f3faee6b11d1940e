"""Parameters and cursors in, JSON out: crafted values are refused, URLs never echo the Host."""

from __future__ import annotations

import dataclasses
import json

import pytest
from browse_support import WordEmbedder, build_library

from browse import create_app
from browse.present import decode_cursor

EVIL = "evil.example"


@pytest.fixture(scope="module")
def library(pg_url, tmp_path_factory):
    return build_library(pg_url, tmp_path_factory.mktemp("present"), n_fillers=4)


def make_app(settings, **web):
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))
    return create_app(settings, embedder=WordEmbedder())


@pytest.fixture(scope="module")
def app(library):
    app = make_app(library, page_size=3)
    yield app
    app.extensions["image_browser"].close()


# --- cursors -----------------------------------------------------------------------------

CRAFTED_CURSORS = [
    "9999999999999999999.1",  # past datetime's last year
    "-99999999999999999999.1",
    "100000000000000000000.1",
    "253402300800000000.1",  # the first microsecond of year 10000
    "-62135596800000001.1",  # before year 1
    "1.99999999999999999999",  # an id no bigint holds
    "1.9223372036854775808",
    "1.0",
    "\u00b2.1",  # a digit to str.isdigit(), not to int()
    "\u0663.1",  # an Arabic-Indic digit: int() takes it, a cursor never has it
    "1.2.3", "", ".", "abc", "1." + "9" * 40,
]


@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
@pytest.mark.parametrize("path", ["/api/images", "/"])
def test_crafted_cursors_are_400s(app, path, cursor):
    response = app.test_client().get(path, query_string={"cursor": cursor})
    if cursor == "":
        assert response.status_code == 200  # no cursor: the first page
        return
    assert response.status_code == 400, response.data[:200]
    if path.startswith("/api/"):
        assert "not a page cursor" in response.get_json()["error"]["message"]


def test_the_apps_own_cursors_still_reach_every_image(app):
    client, cursor, seen = app.test_client(), None, []
    while True:
        query = {"cursor": cursor} if cursor else {}
        body = client.get("/api/images", query_string=query).get_json()
        seen += [image["id"] for image in body["images"]]
        if not (cursor := body["next_cursor"]):
            break
        assert decode_cursor(cursor)[1] == seen[-1]
    assert len(seen) == len(set(seen)) == 11


# --- URLs in the JSON -------------------------------------------------------------------

def api_bodies(client, headers) -> list[dict]:
    first = client.get("/api/images", headers=headers).get_json()
    image_id = first["images"][0]["id"]
    return [first, *(client.get(url, headers=headers).get_json() for url in (
        f"/api/images/{image_id}", f"/api/images/{image_id}/similar", "/api/search?q=cat",
    ))]


def test_json_urls_never_carry_the_host_header(app):
    client = app.test_client()
    bodies = api_bodies(client, {"Host": EVIL})
    assert EVIL not in json.dumps(bodies)
    image = bodies[1]["image"]
    for field in ("thumbnail_url", "original_url", "page_url"):
        assert image[field].startswith("/"), image[field]  # relative to the server asked
        assert client.get(image[field]).status_code == 200


def test_json_urls_start_with_the_configured_public_url(library):
    app = make_app(library, public_url="https://photos.example.com")
    try:
        bodies = api_bodies(app.test_client(), {"Host": EVIL})
        assert EVIL not in json.dumps(bodies)
        image = bodies[1]["image"]
        for field in ("thumbnail_url", "original_url", "page_url"):
            assert image[field].startswith("https://photos.example.com/"), image[field]
    finally:
        app.extensions["image_browser"].close()
