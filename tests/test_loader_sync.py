import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zlib
import struct
from datetime import datetime
from pathlib import Path

import boto3
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from loader.cli import main as loader_cli
from loader.sync import CHUNK, run_sync
from shared.settings import R2Settings
from shared.storage import LocalStorage, R2Storage
from shared.store import Catalogue, Schema, connect

from conftest import make_public_bucket, running, statements_sent, wild_manifest

ROOT = Path(__file__).resolve().parents[1]


def sync(catalogue, images, storage=None, **kw):
    storage = storage or LocalStorage(images, images.parent / "thumbs")
    return run_sync(catalogue, storage, images, jobs=2, max_pixels=50_000_000, progress=False, **kw)


def rows(catalogue) -> dict[str, tuple]:
    return {
        r[0]: r[1:]
        for r in catalogue.conn.execute(
            "SELECT filename, width, height, sha256, thumbnail_key, updated_at FROM image_embeddings"
        ).fetchall()
    }


def save_jpeg(path: Path, size=(64, 48), color=(200, 30, 30), orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.new("RGB", size, color).save(path, "JPEG", exif=exif.tobytes())


def test_wild_images_land_with_displayed_size_and_broken_ones_are_reported(catalogue, wild_images):
    report = sync(catalogue, wild_images)
    manifest = wild_manifest()
    ok = {r["path"]: (int(r["expected_width"]), int(r["expected_height"])) for r in manifest
          if r["expected_outcome"] == "ok"}
    bad = {r["path"] for r in manifest if r["expected_outcome"] == "error"}
    stored = rows(catalogue)
    assert {name: (w, h) for name, (w, h, *_rest) in stored.items()} == ok
    assert {f["file"] for f in report.failed} == bad
    assert all(f["error"] for f in report.failed)
    assert report.new == len(ok)
    thumbs = wild_images.parent / "thumbs"
    for name, (_w, _h, _sha, thumb, _t) in stored.items():
        assert (thumbs / thumb).is_file(), name


def test_thumbnails_are_upright(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "rotated.jpg", size=(120, 60), orientation=6)  # stored wide, shown tall
    sync(catalogue, images)
    (thumb,) = [r[3] for r in rows(catalogue).values()]
    with Image.open(tmp_path / "thumbs" / thumb) as image:
        assert image.size == (60, 120)


def test_rerun_is_a_no_op(catalogue, wild_images):
    sync(catalogue, wild_images)
    before = rows(catalogue)
    again = sync(catalogue, wild_images)
    assert again.new == again.changed == again.thumbnails == 0
    assert again.unchanged == len(before)
    assert rows(catalogue) == before  # not even updated_at moved


def test_a_no_op_rerun_is_one_query_and_one_walk_of_the_folder(catalogue, wild_images):
    """Issue 11: at 200,000 files the no-op re-sync must not ask the database per file."""
    sync(catalogue, wild_images)
    reports = []
    assert statements_sent(catalogue.conn, lambda: reports.append(sync(catalogue, wild_images))) == 1
    assert reports[0].unchanged > 40 and reports[0].new == 0


def test_touched_file_is_rehashed_but_not_rewritten(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg")
    sync(catalogue, images)
    os.utime(images / "a.jpg", ns=(1, 1))
    report = sync(catalogue, images)
    assert report.unchanged == 1 and report.changed == 0
    assert catalogue.known_files()["a.jpg"].mtime_ns == 1


def test_changed_file_updates_its_row_and_forgets_its_embedding(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg", size=(64, 48))
    sync(catalogue, images)
    catalogue.conn.execute("UPDATE image_embeddings SET embedding = %s", (np.ones(768, np.float32),))
    save_jpeg(images / "a.jpg", size=(30, 90), color=(0, 0, 255))
    report = sync(catalogue, images)
    assert report.changed == 1
    assert rows(catalogue)["a.jpg"][:2] == (30, 90)
    assert catalogue.counts().embedded == 0


def test_same_content_under_two_names_is_two_rows_with_one_hash(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg")
    (images / "copy").mkdir()
    (images / "copy" / "a again.jpg").write_bytes((images / "a.jpg").read_bytes())
    sync(catalogue, images)
    stored = rows(catalogue)
    assert set(stored) == {"a.jpg", "copy/a again.jpg"}
    assert stored["a.jpg"][2] == stored["copy/a again.jpg"][2]


def test_hidden_files_non_images_and_links_out_are_skipped(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "keep.jpg")
    save_jpeg(images / ".hidden.jpg")
    save_jpeg(images / ".cache" / "inside.jpg")
    (images / "notes.txt").write_text("not an image")
    outside = tmp_path / "outside"
    save_jpeg(outside / "secret.jpg")
    (images / "link-out.jpg").symlink_to(outside / "secret.jpg")
    (images / "folder-out").symlink_to(outside, target_is_directory=True)
    (images / "link-in.jpg").symlink_to(images / "keep.jpg")
    report = sync(catalogue, images)
    assert set(rows(catalogue)) == {"keep.jpg", "link-in.jpg"}
    assert report.skipped == 5 and not report.failed


def write_png_header_bomb(path: Path, width: int, height: int) -> None:
    """A tiny PNG claiming to be enormous: decoding it would need gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_without_decoding(catalogue, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    write_png_header_bomb(images / "bomb.png", 100_000, 100_000)
    save_jpeg(images / "fine.jpg")
    report = sync(catalogue, images)
    assert [f["file"] for f in report.failed] == ["bomb.png"]
    assert "decompression bomb" in report.failed[0]["error"]
    assert set(rows(catalogue)) == {"fine.jpg"}


def test_prune_removes_rows_and_thumbnails_of_deleted_files(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg", color=(1, 2, 3))
    save_jpeg(images / "b.jpg", color=(200, 200, 0))
    sync(catalogue, images)
    thumb_b = rows(catalogue)["b.jpg"][3]
    (images / "b.jpg").unlink()
    assert sync(catalogue, images).pruned == 0  # opt-in
    assert "b.jpg" in rows(catalogue)
    report = sync(catalogue, images, prune=True)
    assert report.pruned == 1 and set(rows(catalogue)) == {"a.jpg"}
    assert not (tmp_path / "thumbs" / thumb_b).exists()


def test_dry_run_changes_nothing(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg")
    report = sync(catalogue, images, dry_run=True)
    assert report.new == 1 and rows(catalogue) == {}


def test_sync_to_r2_uploads_originals_and_thumbnails(catalogue, tmp_path, s3_endpoint, wild_images):
    bucket = make_public_bucket(s3_endpoint)
    r2 = R2Storage(R2Settings("acct", "k", "s", bucket, "lib/", s3_endpoint), f"{s3_endpoint}/{bucket}")
    report = sync(catalogue, wild_images, storage=r2)
    keys = {o["Key"]: o for page in r2.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    for name, (_w, _h, _sha, thumb, _t) in rows(catalogue).items():
        assert f"lib/{name}" in keys
        assert f"lib/.thumbnails/{thumb}" in keys
    head = r2.client.head_object(Bucket=bucket, Key="lib/formats/horse.jpg")
    assert head["ContentType"] == "image/png"  # detected from the content, not the name
    assert report.failed


def cli_env(db_url: str, images: Path, data: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "SUPABASE", "IMAGE"))}
    env.update(SUPABASE_DB_URL=db_url, IMAGES_DIR=str(images), DATA_DIR=str(data), **extra)
    return env


def test_cli_json_summary_and_exit_code(db_url, wild_images, tmp_path):
    runner = CliRunner()
    env = cli_env(db_url, wild_images, tmp_path / "data")
    result = runner.invoke(loader_cli, ["sync", "--json"], env=env)
    assert result.exit_code == 1, result.output + "".join(traceback.format_exception(*result.exc_info))
    summary = json.loads(result.stdout)
    assert summary["new"] == 43 and len(summary["failed"]) == 7
    status = runner.invoke(loader_cli, ["status", "--json"], env=env)
    assert status.exit_code == 0
    assert json.loads(status.stdout)["images"] == 43


def test_cli_refuses_half_configured_r2(db_url, tmp_path):
    env = cli_env(db_url, tmp_path, tmp_path, R2_BUCKET="photos")
    result = CliRunner().invoke(loader_cli, ["status"], env=env)
    assert result.exit_code == 1
    assert "R2_ACCESS_KEY_ID" in result.output


def test_cli_ensure_schema_refuses_other_dimension(db_url, tmp_path):
    env = cli_env(db_url, tmp_path, tmp_path)
    runner = CliRunner()
    assert runner.invoke(loader_cli, ["ensure-schema"], env=env).exit_code == 0
    result = runner.invoke(loader_cli, ["ensure-schema"], env={**env, "EXPECTED_VECTOR_DIM": "512"})
    assert result.exit_code == 1
    assert "768" in result.output and "512" in result.output


def test_killed_sync_converges_on_rerun(db_url, tmp_path, s3_endpoint):
    images = tmp_path / "imgs"
    rng = np.random.default_rng(7)
    for i in range(240):
        pixels = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        save_path = images / f"batch {i // 50}" / f"photo #{i}.jpg"
        save_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(save_path, "JPEG", quality=95)
    bucket = make_public_bucket(s3_endpoint)
    env = cli_env(db_url, images, tmp_path / "data", R2_ACCOUNT_ID="acct", R2_ACCESS_KEY_ID="k",
                  R2_SECRET_ACCESS_KEY="s", R2_BUCKET=bucket, R2_PREFIX="p",
                  R2_ENDPOINT_URL=s3_endpoint, IMAGE_BASE_URL=f"{s3_endpoint}/{bucket}")
    command = [sys.executable, "-m", "loader", "sync", "--jobs", "2"]
    conn = connect(db_url)
    Schema(conn).ensure(768)
    catalogue = Catalogue(conn)
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and catalogue.counts().images == 0 and child.poll() is None:
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)  # the whole process group: decoders too
    child.wait(timeout=30)
    landed = catalogue.counts().images
    assert 0 < landed < 240, "the kill should land half-way"

    admin = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="k",
                         aws_secret_access_key="s", region_name="us-east-1")

    def objects() -> set[str]:
        pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="p/")
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    assert {f"p/{name}" for name in catalogue.known_files()} <= objects()  # no row without its object

    finished = subprocess.run(command + ["--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert catalogue.counts().images == 240
    names = set(catalogue.known_files())
    assert names == {str(p.relative_to(images)) for p in images.rglob("*.jpg")}
    assert {f"p/{name}" for name in names} <= objects()
    for name, sha in conn.execute("SELECT filename, sha256 FROM image_embeddings LIMIT 5").fetchall():
        import hashlib
        body = admin.get_object(Bucket=bucket, Key=f"p/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha
    rerun = json.loads(subprocess.run(command + ["--json"], env=env, cwd=ROOT, capture_output=True,
                                      text=True, timeout=300).stdout)
    assert rerun["unchanged"] == 240 and rerun["new"] == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_thumbnail_matches_exif_transpose_for_every_orientation(orientation):
    from PIL import ImageOps

    from shared.imagefile import make_thumbnail

    pixels = np.zeros((60, 100, 3), np.uint8)
    pixels[:20, :30] = (255, 0, 0)  # a red block in the top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, "PNG", exif=exif.tobytes())
    with Image.open(io.BytesIO(data.getvalue())) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.int16)
        image.load()
        thumb = np.asarray(Image.open(io.BytesIO(make_thumbnail(image))), np.int16)
    assert thumb.shape == expected.shape
    assert np.abs(thumb - expected).mean() < 8  # JPEG noise only: the red block is in place


def test_rows_from_before_thumbnails_get_one_and_keep_their_embedding(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "old.jpg")
    sync(catalogue, images)
    # As a row written by an older release looks: no thumbnail, but an embedding.
    catalogue.conn.execute("UPDATE image_embeddings SET thumbnail_key = NULL, embedding = %s",
                       (np.ones(768, np.float32),))
    shutil.rmtree(tmp_path / "thumbs")
    report = sync(catalogue, images)
    assert report.thumbnails == 1 and report.unchanged == 1 and report.changed == 0
    thumb = rows(catalogue)["old.jpg"][3]
    assert thumb and (tmp_path / "thumbs" / thumb).is_file()
    assert catalogue.counts().embedded == 1


# --- what a photo says about itself (issue 10) ----------------------------------------------

MTIME = 1_590_998_400  # 2020-06-01 08:00:00 UTC


def metadata(catalogue) -> dict[str, tuple]:
    """Each row's date taken, fallback mark, camera and position."""
    return {
        r[0]: r[1:]
        for r in catalogue.conn.execute(
            """SELECT filename, taken_at, taken_at_is_fallback, camera, latitude, longitude
               FROM image_embeddings"""
        ).fetchall()
    }


@pytest.fixture
def utc(monkeypatch):
    """This process and its decoder processes in UTC (the mtime fallback is local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_camera_files_land_with_their_date_camera_and_position(catalogue, wild_images, utc):
    for name in ("misc/invalid-exif.jpg", "misc/hopper_bad_exif.jpg"):
        os.utime(wild_images / name, (MTIME, MTIME))
    sync(catalogue, wild_images)
    found = metadata(catalogue)
    # Read by hand with exiftool 12.57: DSCN0010.JPG's DateTimeOriginal 2008:10:22 16:28:39,
    # Make "NIKON", Model "COOLPIX P6000", GPS 43/1 28/1 281400000/100000000 N and
    # 11/1 53/1 645599999/100000000 E = 43.467448333 N, 11.885126667 E.
    taken, fallback, camera, lat, lon = found["camera/DSCN0010.JPG"]
    assert (taken, fallback, camera) == (datetime(2008, 10, 22, 16, 28, 39), False, "NIKON COOLPIX P6000")
    assert (lat, lon) == (pytest.approx(43.467448333, abs=1e-6), pytest.approx(11.885126667, abs=1e-6))
    # canon_hdr_NO.jpg: DateTimeOriginal 2015:02:09 22:47:44, Make "Canon", Model "Canon
    # PowerShot SX60 HS", a GPS IFD with only GPSVersionID (no position).
    assert found["camera/canon_hdr_NO.jpg"] == (datetime(2015, 2, 9, 22, 47, 44), False,
                                                 "Canon PowerShot SX60 HS", None, None)
    # Hostile EXIF (exiftool: "Malformed APP1 EXIF segment", "Bad IFD0 directory"): the image
    # is recorded all the same, dated by its modification time.
    for name in ("misc/invalid-exif.jpg", "misc/hopper_bad_exif.jpg"):
        assert found[name] == (datetime(2020, 6, 1, 8, 0), True, None, None, None), name


class CountingStorage(LocalStorage):
    """Local storage that counts what is written to it."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.puts: list[str] = []

    def put_original(self, key, path, content_type) -> None:
        self.puts.append(key)
        super().put_original(key, path, content_type)

    def put_thumbnail(self, key, data) -> None:
        self.puts.append(key)
        super().put_thumbnail(key, data)


def png_with_exif_after_pixels(path: Path, exif: bytes) -> None:
    """A PNG whose eXIf chunk follows its IDAT (allowed; only a decoder finds it)."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(out, "PNG")
    data = out.getvalue()
    end = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    path.write_bytes(data[:end] + chunk + data[end:])


def exif_block(taken: str, make: str = "FUJIFILM", model: str = "X-T3") -> bytes:
    exif = Image.Exif()
    exif.update({0x010F: make, 0x0110: model})
    exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    return exif.tobytes()


def test_rows_from_before_metadata_get_it_without_upload_thumbnail_or_embedding(db_url, tmp_path, utc):
    """A row written by schema version 2 (no metadata columns), with its thumbnail and
    embedding, is upgraded and then dated by sync: nothing uploaded, nothing else changed."""
    from shared.store import schema

    images = tmp_path / "imgs"
    shutil.copy(ROOT / "tests/data/wild/camera/DSCN0010.JPG", images.mkdir() or images / "nikon.jpg")
    png_with_exif_after_pixels(images / "late-exif.png", exif_block("2011:11:11 11:11:11"))
    storage = CountingStorage(images, tmp_path / "thumbs")
    with connect(db_url) as conn:
        for step in schema.MIGRATIONS:  # the table as release 2 made it
            if step not in schema.METADATA_STEPS:
                conn.execute(step.format(dim=768))
        conn.execute("INSERT INTO image_browser_schema (version, dimensions) VALUES (2, 768)")
        for f in sorted(images.iterdir()):  # rows as release 2's sync wrote them
            data, stat = f.read_bytes(), f.stat()
            conn.execute(
                """INSERT INTO image_embeddings (filename, width, height, byte_size, sha256, format,
                       mtime_ns, thumbnail_key, embedding, embedding_model, embedded_at)
                   VALUES (%s, 8, 8, %s, %s, 'JPEG', %s, %s, %s, 'old/model', '2020-01-01')""",
                (f.name, len(data), hashlib.sha256(data).hexdigest(), stat.st_mtime_ns,
                 f"thumb-of-{f.name}", np.ones(768, np.float32)))
        before = conn.execute("SELECT filename, sha256, thumbnail_key, embedding, embedded_at "
                              "FROM image_embeddings ORDER BY filename").fetchall()
        Schema(conn).ensure(768)
        catalogue = Catalogue(conn)
        assert sync(catalogue, images, dry_run=True).metadata == 2
        report = sync(catalogue, images, storage=storage)
        assert storage.puts == []
        assert (report.metadata, report.unchanged, report.new, report.changed) == (2, 2, 0, 0)
        after = conn.execute("SELECT filename, sha256, thumbnail_key, embedding, embedded_at "
                             "FROM image_embeddings ORDER BY filename").fetchall()
        assert after == before
        found = metadata(catalogue)
        assert found["nikon.jpg"][:3] == (datetime(2008, 10, 22, 16, 28, 39), False, "NIKON COOLPIX P6000")
        assert found["late-exif.png"][:3] == (datetime(2011, 11, 11, 11, 11, 11), False, "FUJIFILM X-T3")
        again = sync(catalogue, images, storage=storage)
        assert (again.metadata, again.unchanged, storage.puts) == (0, 2, [])  # read once only


def test_touched_file_gets_its_metadata_read_again(catalogue, tmp_path, utc):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg")  # no EXIF date: dated by its modification time
    os.utime(images / "a.jpg", (MTIME, MTIME))
    sync(catalogue, images)
    assert metadata(catalogue)["a.jpg"][:2] == (datetime(2020, 6, 1, 8, 0), True)
    os.utime(images / "a.jpg", (MTIME + 3600, MTIME + 3600))
    report = sync(catalogue, images)
    assert report.unchanged == 1 and report.changed == report.metadata == 0
    assert metadata(catalogue)["a.jpg"][:2] == (datetime(2020, 6, 1, 9, 0), True)


def test_changed_file_gets_the_new_files_metadata(catalogue, tmp_path, utc):
    images = tmp_path / "imgs"
    png_with_exif_after_pixels(images.mkdir() or images / "p.png", exif_block("2001:01:01 01:01:01"))
    sync(catalogue, images)
    png_with_exif_after_pixels(images / "p.png", exif_block("2002:02:02 02:02:02", "Canon", "EOS 5D"))
    os.utime(images / "p.png", (MTIME, MTIME))
    assert sync(catalogue, images).changed == 1
    assert metadata(catalogue)["p.png"][:3] == (datetime(2002, 2, 2, 2, 2, 2), False, "Canon EOS 5D")


def test_gone_files_are_hidden_then_restored_or_pruned(catalogue, tmp_path, counts_stay_true):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg", color=(1, 2, 3))
    save_jpeg(images / "b.jpg", color=(200, 200, 0))
    sync(catalogue, images)
    assert counts_stay_true(catalogue.conn)["images"] == 2
    (images / "b.jpg").rename(tmp_path / "b.jpg")
    report = sync(catalogue, images)
    assert (report.hidden, report.pruned) == (1, 0)
    assert [r.filename for r in catalogue.list_images(10)] == ["a.jpg"]
    assert counts_stay_true(catalogue.conn)["hidden"] == 1
    assert sync(catalogue, images).hidden == 0  # hidden once
    (tmp_path / "b.jpg").rename(images / "b.jpg")
    report = sync(catalogue, images)
    assert report.restored == 1 and report.new == 0 and report.unchanged == 2
    assert len(catalogue.list_images(10)) == 2
    assert counts_stay_true(catalogue.conn)["hidden"] == 0
    (images / "b.jpg").unlink()
    sync(catalogue, images)
    assert sync(catalogue, images, prune=True).pruned == 1  # a hidden row is forgotten too
    assert set(rows(catalogue)) == {"a.jpg"}
    assert counts_stay_true(catalogue.conn)["images"] == 1


def test_files_changed_just_now_wait_for_a_later_pass(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "fresh.jpg")
    report = sync(catalogue, images, settle_s=3600)
    assert report.settling == 1 and report.new == 0 and report.failed == []
    assert rows(catalogue) == {}
    assert sync(catalogue, images, settle_s=0.0).new == 1


def test_a_stop_request_ends_the_sync_with_what_is_done_recorded(catalogue, tmp_path):
    import threading

    images = tmp_path / "imgs"
    for i in range(40):
        save_jpeg(images / f"p{i:02d}.jpg", color=(i, 2 * i, 3))
    stop = threading.Event()

    class StopAtFirstUpload(LocalStorage):
        def put_thumbnail(self, key: str, data: bytes) -> None:
            super().put_thumbnail(key, data)
            stop.set()  # asked as the first file is stored: the files in hand still land

    report = sync(catalogue, images, stop=stop)  # not asked: all
    assert report.new == 40 and not report.stopped
    conn = catalogue.conn
    conn.execute("DELETE FROM image_embeddings")
    movers = 4  # jobs=1: each mover finishes the chunk in its hands, none starts another
    report = run_sync(catalogue, StopAtFirstUpload(images, tmp_path / "thumbs"), images, jobs=1,
                      max_pixels=50_000_000, stop=stop)
    assert report.stopped and 0 < report.new <= movers * CHUNK < 40
    assert len(rows(catalogue)) == report.new
    assert sync(catalogue, images).new == 40 - report.new


def test_sigterm_stops_loader_sync_cleanly_and_the_next_run_finishes(db_url, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    pixels = np.random.default_rng(3).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "n000.jpg", quality=90)
    data = (images / "n000.jpg").read_bytes()
    for i in range(1, 150):
        (images / f"n{i:03d}.jpg").write_bytes(data + f"copy {i}".encode())
    env = cli_env(db_url, images, tmp_path / "data")
    command = [sys.executable, "-m", "loader", "sync", "--jobs", "1"]
    conn = connect(db_url)
    Schema(conn).ensure(768)
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Catalogue(conn).counts().images == 0:
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "stopped before the end" in err and "Traceback" not in err
    assert "\r" not in err  # a log gets plain progress lines, not a bar (issue 13, item 15)
    landed = Catalogue(conn).counts().images
    assert 0 < landed < 150 and f"added {landed}," in out
    rerun = subprocess.run(command + ["--json"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert json.loads(rerun.stdout)["new"] == 150 - landed


# --- storage that cannot be written: one line before work, or per-file failures -------------


def sha_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def only_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


@pytest.mark.parametrize("blocker", ["data-dir-is-a-file", "thumbnails-is-a-file"])
def test_sync_refuses_before_work_when_thumbnails_have_nowhere_to_go(db_url, tmp_path, blocker):
    images, data = tmp_path / "imgs", tmp_path / "data"
    save_jpeg(images / "a.jpg")
    if blocker == "data-dir-is-a-file":
        data.write_text("not a folder")
        named = data
    else:
        data.mkdir()
        (data / "thumbnails").write_text("not a folder")
        named = data / "thumbnails"
    result = CliRunner().invoke(loader_cli, ["sync"], env=cli_env(db_url, images, data))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line = only_error_line(result.output)
    assert f"{named} is a file, not a folder" in line and "DATA_DIR" in line
    with connect(db_url) as conn:
        assert not Schema(conn).table_exists() or Catalogue(conn).counts().images == 0


def test_sync_refuses_before_work_when_the_thumbnails_folder_is_read_only(db_url, tmp_path):
    from conftest import immutable

    images, thumbnails = tmp_path / "imgs", tmp_path / "data" / "thumbnails"
    save_jpeg(images / "a.jpg")
    thumbnails.mkdir(parents=True)
    with immutable(thumbnails):
        done = subprocess.run([sys.executable, "-m", "loader", "sync"],
                              env=cli_env(db_url, images, tmp_path / "data"), cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = only_error_line(done.stdout + done.stderr)
    assert f"cannot write thumbnails in {thumbnails}" in line


def test_the_embedded_database_in_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    env = {**cli_env("", tmp_path, tmp_path / "data"), "SUPABASE_DB_URL": ""}
    result = CliRunner().invoke(loader_cli, ["status"], env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{tmp_path / 'data'} is a file, not a folder" in only_error_line(result.output)


def test_a_thumbnail_that_cannot_be_written_fails_its_file_only_and_a_rerun_converges(
        catalogue, tmp_path):
    images = tmp_path / "imgs"
    for name, color in (("a.jpg", (10, 20, 30)), ("b.jpg", (200, 10, 10)), ("c.jpg", (0, 90, 0))):
        save_jpeg(images / name, color=color)
    shard = tmp_path / "thumbs" / sha_of(images / "b.jpg")[:2]
    shard.parent.mkdir()
    shard.write_text("a file where b.jpg's thumbnail folder goes")
    report = sync(catalogue, images)
    assert [f["file"] for f in report.failed] == ["b.jpg"] and report.new == 2
    assert f"{shard} is a file, not a folder" in report.failed[0]["error"]
    assert set(rows(catalogue)) == {"a.jpg", "c.jpg"}  # no row without its thumbnail

    shard.unlink()
    again = sync(catalogue, images)
    assert again.new == 1 and not again.failed and set(rows(catalogue)) == {"a.jpg", "b.jpg", "c.jpg"}
    assert (tmp_path / "thumbs" / rows(catalogue)["b.jpg"][3]).is_file()


def test_prune_reports_a_thumbnail_it_cannot_delete_and_goes_on(catalogue, tmp_path):
    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg", color=(1, 2, 3))
    save_jpeg(images / "b.jpg", color=(200, 200, 0))
    save_jpeg(images / "c.jpg", color=(0, 0, 200))
    sync(catalogue, images)
    thumb_b, thumb_c = rows(catalogue)["b.jpg"][3], rows(catalogue)["c.jpg"][3]
    (images / "b.jpg").unlink()
    (images / "c.jpg").unlink()
    stuck = tmp_path / "thumbs" / thumb_b
    stuck.unlink()
    (stuck / "in-the-way").mkdir(parents=True)  # unlink() of a folder fails, even for root
    report = sync(catalogue, images, prune=True)
    assert report.pruned == 2 and set(rows(catalogue)) == {"a.jpg"}
    assert [f["file"] for f in report.failed] == [f"thumbnail {thumb_b}"]
    assert "forgotten, but cannot delete" in report.failed[0]["error"]
    assert not (tmp_path / "thumbs" / thumb_c).exists()


# --- where local originals live: IMAGES_DIR, for every app -----------------------------------


def test_sync_of_another_folder_with_local_storage_is_refused(db_url, tmp_path):
    images, other = tmp_path / "imgs", tmp_path / "elsewhere"
    save_jpeg(images / "a.jpg")
    save_jpeg(other / "b.jpg")
    env = cli_env(db_url, images, tmp_path / "data")
    result = CliRunner().invoke(loader_cli, ["sync", "--images", str(other)], env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line = only_error_line(result.output)
    assert f"cannot sync {other}" in line and f"IMAGES_DIR, which is {images}" in line
    with connect(db_url) as conn:
        assert not Schema(conn).table_exists() or Catalogue(conn).counts().images == 0

    (tmp_path / "link").symlink_to(images)  # the same folder by another name is fine
    same = CliRunner().invoke(loader_cli, ["sync", "--images", str(tmp_path / "link")], env=env)
    assert same.exit_code == 0, same.output


def test_rows_from_another_folder_in_r2_are_usable_by_embed(db_url, tmp_path, s3_endpoint, server):
    from fake_replicate import TOKEN

    images, other = tmp_path / "imgs", tmp_path / "elsewhere"
    images.mkdir()
    save_jpeg(other / "trip" / "b.jpg")
    bucket = make_public_bucket(s3_endpoint)
    env = cli_env(db_url, images, tmp_path / "data", R2_ACCOUNT_ID="acct", R2_ACCESS_KEY_ID="k",
                  R2_SECRET_ACCESS_KEY="s", R2_BUCKET=bucket, R2_ENDPOINT_URL=s3_endpoint,
                  IMAGE_BASE_URL=f"{s3_endpoint}/{bucket}", REPLICATE_API_TOKEN=TOKEN,
                  REPLICATE_BASE_URL=server.url, REPLICATE_POLL_INTERVAL="0.02")
    synced = CliRunner().invoke(loader_cli, ["sync", "--images", str(other)], env=env)
    assert synced.exit_code == 0, synced.output
    embedded = CliRunner().invoke(loader_cli, ["embed", "--json"], env=env)
    assert embedded.exit_code == 0, embedded.output
    assert json.loads(embedded.stdout)["embedded"] == 1


def test_prune_spares_files_this_scan_could_not_read(catalogue, tmp_path):
    from conftest import without_root_override

    images = tmp_path / "imgs"
    save_jpeg(images / "a.jpg", color=(1, 2, 3))
    save_jpeg(images / "locked" / "b.jpg", color=(200, 0, 0))
    save_jpeg(images / "c.jpg", color=(0, 200, 0))
    save_jpeg(images / "deleted.jpg", color=(0, 0, 200))
    sync(catalogue, images)
    before = rows(catalogue)
    (images / "deleted.jpg").unlink()
    (images / "c.jpg").write_bytes(b"now broken, and a little longer than before")
    (images / "locked").chmod(0)
    try:
        report = without_root_override(sync, catalogue, images, prune=True)
    finally:
        (images / "locked").chmod(0o755)
    assert {f["file"] for f in report.failed} == {"locked/", "c.jpg"}
    assert report.pruned == 1  # deleted.jpg only
    kept = rows(catalogue)
    assert set(kept) == {"a.jpg", "locked/b.jpg", "c.jpg"}
    for name in ("locked/b.jpg", "c.jpg"):
        assert kept[name] == before[name]
        assert (tmp_path / "thumbs" / kept[name][3]).is_file()


def children_of(pid: int) -> set[int]:
    """Every process `pid` started, from /proc (Linux)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_decoders_end_when_a_killed_sync_leaves_them(db_url, tmp_path):
    images = tmp_path / "imgs"
    rng = np.random.default_rng(3)
    images.mkdir()
    for i in range(60):  # enough that the kill lands while they decode (checked below)
        pixels = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"noise {i}.jpg", "JPEG", quality=90)
    child = subprocess.Popen([sys.executable, "-m", "loader", "sync", "--jobs", "2", "--json"],
                             env=cli_env(db_url, images, tmp_path / "data"), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    decoders: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(decoders) < 2 and child.poll() is None and time.monotonic() < deadline:
            decoders = children_of(child.pid)
            time.sleep(0.05)
        assert len(decoders) == 2 and child.poll() is None, "sync should be decoding"
        child.send_signal(signal.SIGKILL)  # the parent only: nobody is left to stop the decoders
        child.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(running(pid) for pid in decoders) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(pid) for pid in decoders), "decoders outlived their sync"
    finally:
        for pid in decoders:  # a failed run must not leave them behind
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
