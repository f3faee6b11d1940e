"""Local originals and thumbnails as the web app serves them: validators that follow the file."""

from __future__ import annotations

import hashlib
import os

from browse_support import build_library

from browse import create_app


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
