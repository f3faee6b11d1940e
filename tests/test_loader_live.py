"""The live library: real filesystem events (inotify), the real sync and the real backfill with
a tiny random-weight CLIP in MLX, on the test Postgres. Short debounce and settle times."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loader.live import LiveLibrary
from loader.model import ModelOutcome
from shared.progress import Board
from shared.settings import LiveSettings, Settings
from shared.store import Catalogue, Schema, connect

DIM = 24  # the tiny CLIP's projection


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def jpeg_bytes(colour, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


class Harness:
    """A running LiveLibrary and ways to look at its library."""

    def __init__(self, settings: Settings, db_url: str) -> None:
        self.settings = settings
        self.images = settings.images_dir
        self.stop = threading.Event()
        self.models: list[ModelOutcome] = []
        self.conn = connect(db_url)
        self.library = LiveLibrary(settings, db_url, self.stop, Board(), table_dimensions=DIM,
                                   jobs=1, on_model=self.models.append)

    def visible(self) -> dict[str, object]:
        """The rows the pages show, by file name."""
        return {row.filename: row for row in Catalogue(self.conn).list_images(200)}

    def embedded(self, *names: str) -> bool:
        """Whether exactly these photos are shown and embedded, from one read of the rows."""
        rows = self.visible()
        return set(rows) == set(names) and all(row.embedded for row in rows.values())

    def embedding(self, name: str) -> tuple[np.ndarray | None, object]:
        vector, at = self.conn.execute(
            "SELECT embedding, embedded_at FROM image_embeddings WHERE filename = %s", (name,)
        ).fetchone()
        return (None if vector is None else vector.to_numpy()), at


def live_settings(db_url: str, root: Path, tiny_folder: Path, **live) -> Settings:
    images = root / "images"
    images.mkdir(exist_ok=True)
    values = dict(debounce_s=0.1, settle_s=0.4, poll_s=0.3, progress_every_s=60.0)
    return Settings(images_dir=images, data_dir=root / "data", database_url=db_url,
                    embedder="mlx", clip_model_path=tiny_folder, expected_vector_dim=DIM,
                    live=LiveSettings(**{**values, **live}))


@pytest.fixture
def start(db_url, tmp_path, tiny_clip):
    """start(**live settings) -> a running Harness; everything is stopped after the test."""
    started: list[Harness] = []

    def make(**live) -> Harness:
        settings = live_settings(db_url, tmp_path, tiny_clip[0], **live)
        with connect(db_url) as conn:
            Schema(conn).ensure(DIM)
        harness = Harness(settings, db_url)
        started.append(harness)
        harness.library.start()
        return harness

    yield make
    for harness in started:
        harness.library.join(timeout=60)
        assert all(not t.is_alive() for t in harness.library._threads), "a thread did not stop"
        harness.conn.close()


def test_a_photo_dropped_in_appears_and_is_then_embedded(start):
    live = start()
    wait_for(lambda: len(live.models) == 2, 60, "the model")
    text, whole = (outcome.embedder for outcome in live.models)
    assert not text.supports_images and text.dimensions == DIM  # search first: the text tower
    assert whole.supports_images and whole.supports_texts  # then the model that embeds photos
    (live.images / "new.jpg").write_bytes(jpeg_bytes((200, 30, 30)))
    wait_for(lambda: "new.jpg" in live.visible(), 20, "the new photo's row")
    wait_for(lambda: live.visible()["new.jpg"].embedded, 30, "its embedding")


def test_a_removed_photo_is_hidden_and_comes_back_with_its_embedding(start, tmp_path):
    live = start()
    for name, colour in (("keep.jpg", (10, 200, 10)), ("away.jpg", (10, 10, 200))):
        (live.images / name).write_bytes(jpeg_bytes(colour))
    wait_for(lambda: live.embedded("keep.jpg", "away.jpg"), 60, "both photos embedded")
    vector, embedded_at = live.embedding("away.jpg")
    assert vector is not None

    (live.images / "away.jpg").rename(tmp_path / "away.jpg")  # an unplugged drive, say
    wait_for(lambda: "away.jpg" not in live.visible(), 20, "the photo to disappear")
    assert Catalogue(live.conn).hidden_count() == 1  # hidden, not deleted
    assert Catalogue(live.conn).counts().images == 1

    (tmp_path / "away.jpg").rename(live.images / "away.jpg")
    wait_for(lambda: "away.jpg" in live.visible(), 20, "the photo to come back")
    assert live.visible()["away.jpg"].embedded
    back_vector, back_at = live.embedding("away.jpg")
    np.testing.assert_array_equal(back_vector, vector)
    assert back_at == embedded_at  # the same embedding, not a new one


def test_a_moved_photo_keeps_its_vector_without_a_model_call(start, capsys):
    live = start()
    (live.images / "here.jpg").write_bytes(jpeg_bytes((120, 60, 30)))
    wait_for(lambda: live.embedded("here.jpg"), 60, "the photo embedded")
    vector, _ = live.embedding("here.jpg")
    (live.images / "album").mkdir()
    (live.images / "here.jpg").rename(live.images / "album" / "there.jpg")
    wait_for(lambda: set(live.visible()) == {"album/there.jpg"}, 20, "the move")
    wait_for(lambda: live.embedded("album/there.jpg"), 20, "the vector to follow")
    np.testing.assert_array_equal(live.embedding("album/there.jpg")[0], vector)
    seen: list[str] = []
    wait_for(lambda: seen.append(capsys.readouterr().err) or "embed: 0 embedded, 1 shared with "
             "identical photos" in "".join(seen), 20, "the backfill's summary")


def noise_jpeg(size=(800, 600)) -> bytes:
    pixels = np.random.default_rng(5).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_file_still_being_written_is_not_read_until_complete(start, capsys):
    live = start(settle_s=2.5)
    data = noise_jpeg()
    half = len(data) // 2
    with open(live.images / "copying.jpg", "wb") as partial:
        for at in range(0, half, 8192):  # a slow copy: the first half, a piece at a time
            partial.write(data[at:min(at + 8192, half)])
            partial.flush()
            time.sleep(0.02)
        time.sleep(1.2)  # far longer than the debounce: a sync pass runs meanwhile
        assert "copying.jpg" not in live.visible()
        partial.write(data[half:])
    wait_for(lambda: "copying.jpg" in live.visible(), 20, "the finished file")
    row = live.visible()["copying.jpg"]
    assert (row.width, row.height) == (800, 600)
    assert "cannot load" not in capsys.readouterr().err  # never reported as broken


def test_polling_finds_changes_without_filesystem_events(start):
    live = start(events="off")
    assert live.library.watch.polling
    (live.images / "polled.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    wait_for(lambda: "polled.jpg" in live.visible(), 20, "the photo found by a rescan")


def test_a_burst_of_files_makes_one_sync_pass(start, capsys):
    live = start(settle_s=0.0, debounce_s=0.6)
    wait_for(lambda: live.library.first_sync.is_set(), 20, "the first pass")
    for i in range(6):  # a copy that takes a while: a file every 0.1 s
        (live.images / f"burst-{i}.jpg").write_bytes(jpeg_bytes((i * 40, 0, 0)))
        time.sleep(0.1)
    wait_for(lambda: len(live.visible()) == 6, 20, "the six photos")
    added = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sync: added")]
    assert added == ["sync: added 6"]


def test_a_broken_file_is_reported_once_not_on_every_pass(start, capsys):
    live = start()
    seen: list[str] = []

    def output() -> str:
        seen.append(capsys.readouterr().err)
        return "".join(seen)

    (live.images / "broken.jpg").write_bytes(b"this is not a picture")
    wait_for(lambda: "cannot load broken.jpg" in output(), 20, "the broken file's report")
    for i in range(2):  # two more passes
        (live.images / f"fine-{i}.jpg").write_bytes(jpeg_bytes((5 + i, 5, 5)))
        wait_for(lambda: f"fine-{i}.jpg" in live.visible(), 20, "a later pass")
    assert output().count("cannot load broken.jpg") == 1, output()


def test_the_vector_index_the_settings_ask_for_is_built_in_the_background(db_url, tmp_path,
                                                                          tiny_clip, capsys):
    from shared.store import ImageRecord, VectorIndex
    from shared.store.layout import HALF_INDEX

    with connect(db_url) as conn:  # a library indexed before issue 11 (float32)
        Schema(conn).ensure(DIM, "float32")
        Catalogue(conn).upsert_images([ImageRecord("old.jpg", 4, 3, 10, "a" * 64, "JPEG", 1, None)])
    live = Harness(live_settings(db_url, tmp_path, tiny_clip[0]), db_url)
    live.library.start()
    try:
        wait_for(lambda: VectorIndex(live.conn).state().valid == (HALF_INDEX,), 60,
                 "the half-precision index")
        wait_for(lambda: "index: the vector index is as EMBEDDING_STORAGE asks"
                 in capsys.readouterr().err, 20, "the index thread to say so")
    finally:
        live.library.join(timeout=60)
        live.conn.close()
    assert all(not t.is_alive() for t in live.library._threads)
