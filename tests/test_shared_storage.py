import os
import threading
import urllib.request

import pytest

from shared.settings import R2Settings
from shared.storage import LocalStorage, R2Storage, StorageError

from conftest import make_public_bucket

HOSTILE_NAMES = [
    "plain.jpg",
    "with space.jpg",
    "hash#tag.jpg",
    "question?.jpg",
    "percent%20.jpg",
    "quote'\"s.jpg",
    "Crémieux – été/日本 😀.png",
    "folder/+plus&amp.png",
]


@pytest.fixture
def r2(s3_endpoint):
    bucket = make_public_bucket(s3_endpoint)
    settings = R2Settings(account_id="acct", access_key_id="k", secret_access_key="s",
                          bucket=bucket, prefix="library/", endpoint_url=s3_endpoint)
    # moto serves objects path-style at /bucket/key, which stands in for R2's public URL.
    return R2Storage(settings, f"{s3_endpoint}/{bucket}")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_r2_public_urls_fetch_the_object(r2, tmp_path, name):
    source = tmp_path / "file"
    source.write_bytes(name.encode() * 3)
    r2.put_original(name, source, "image/png")
    url = r2.original_url(name)
    assert url.startswith(r2.public_base_url + "library/")
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == name.encode() * 3
        assert response.headers["Content-Type"] == "image/png"


def test_r2_large_files_use_multipart(r2, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * (6 * 1024 * 1024))
    r2.transfer.multipart_threshold = 5 * 1024 * 1024
    r2.transfer.multipart_chunksize = 5 * 1024 * 1024
    r2.put_original("big.jpg", big, "image/jpeg")
    head = r2.client.head_object(Bucket=r2.r2.bucket, Key="library/big.jpg")
    assert head["ContentLength"] == 6 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-2")  # two parts
    assert r2.read_original("big.jpg") == big.read_bytes()


def test_r2_thumbnails_live_beside_originals(r2):
    r2.put_thumbnail("ab/abc.jpg", b"thumb")
    assert r2.thumbnail_url("ab/abc.jpg").endswith("/library/.thumbnails/ab/abc.jpg")
    with urllib.request.urlopen(r2.thumbnail_url("ab/abc.jpg"), timeout=30) as response:
        assert response.read() == b"thumb"


def test_r2_failure_names_the_file(tmp_path):
    settings = R2Settings(account_id="a", access_key_id="k", secret_access_key="s", bucket="b",
                          endpoint_url="http://127.0.0.1:9")  # nothing listens on the discard port
    storage = R2Storage(settings, "https://img.example.com")
    storage.client.meta.config.retries["max_attempts"] = 1
    source = tmp_path / "f.jpg"
    source.write_bytes(b"x")
    with pytest.raises(StorageError, match="f.jpg"):
        storage.put_original("f.jpg", source, "image/jpeg")


@pytest.mark.parametrize("key", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "", "a\x00b"])
def test_local_storage_refuses_keys_outside_its_folders(tmp_path, key):
    storage = LocalStorage(tmp_path / "images", tmp_path / "thumbs")
    with pytest.raises(StorageError):
        storage.original_path(key)
    with pytest.raises(StorageError):
        storage.thumbnail_path(key)


@pytest.mark.skipif(os.sep != "/" or os.altsep is not None, reason="POSIX file names")
@pytest.mark.parametrize("key", ["back\\slash.jpg", "a\\..\\b.jpg", "..\\up.jpg", "new\nline.jpg"])
def test_a_posix_name_with_a_backslash_or_newline_is_one_name_inside_the_folder(tmp_path, key):
    # Legal on Linux and macOS, where a backslash separates nothing: refusing them made
    # every sync of such a file fail, forever.
    storage = LocalStorage(tmp_path / "images", tmp_path / "thumbs")
    path = storage.original_path(key)
    assert path.parent == tmp_path / "images" and path.name == key
    path.parent.mkdir()
    path.write_bytes(b"pixels")
    storage.put_original(key, path, "image/jpeg")  # already in place: nothing to copy
    assert storage.read_original(key) == b"pixels"


def test_threads_writing_one_thumbnail_at_once_all_succeed(tmp_path):
    # Copies of one picture share a thumbnail; sync's threads write them concurrently.
    storage = LocalStorage(tmp_path / "images", tmp_path / "thumbs")
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def write() -> None:
        start.wait(timeout=30)
        for _ in range(200):
            try:
                storage.put_thumbnail("ab/abc.jpg", b"the same bytes")
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert [p.name for p in (tmp_path / "thumbs/ab").iterdir()] == ["abc.jpg"]


def test_local_thumbnail_write_is_atomic(tmp_path):
    storage = LocalStorage(tmp_path / "images", tmp_path / "thumbs")
    storage.put_thumbnail("ab/abc.jpg", b"data")
    assert (tmp_path / "thumbs/ab/abc.jpg").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "thumbs/ab").iterdir()] == ["abc.jpg"]
