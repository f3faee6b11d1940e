"""Helpers for the browse tests: a word-vector embedder and a small seeded library."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from loader.sync import run_sync
from shared.embedders.base import ImageSource
from shared.settings import Settings
from shared.storage import open_storage
from shared.embedders.base import Embedder
from shared.store import Catalogue, Schema, connect

DIM = 768
# Each known word owns one axis; colours of uploaded images land on the same axes as their words.
VOCAB = {"red": 0, "green": 1, "blue": 2, "bicycle": 3, "snow": 4, "sea": 5, "forest": 6,
         "car": 7, "cat": 8}
BIAS_AXIS = 100  # a little of every vector, so an unknown word still has a direction
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


class WordEmbedder(Embedder):
    """A deterministic stand-in for CLIP: texts are bags of known words, images their mean colour."""

    model_id = "test/word-vectors"

    def __init__(self, dimensions: int = DIM, delay_s: float = 0.0, error: str | None = None) -> None:
        self.dimensions = dimensions
        self.delay_s = delay_s
        self.error = error
        self.calls = 0

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text: the sum of its known words' axes."""
        self._work()
        return np.stack([text_vector(t, self.dimensions) for t in texts])

    def embed_images(self, images: list[ImageSource]) -> np.ndarray:
        """One unit vector per image: its mean red, green and blue on those words' axes."""
        self._work()
        out = []
        for source in images:
            with Image.open(io.BytesIO(source.read())) as image:
                mean = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
            vector = np.zeros(self.dimensions, dtype=np.float32)
            vector[[VOCAB["red"], VOCAB["green"], VOCAB["blue"]]] = mean / 255.0
            vector[BIAS_AXIS] = 0.01
            out.append(vector / np.linalg.norm(vector))
        return np.stack(out)

    def _work(self) -> None:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error:
            raise RuntimeError(self.error)


def text_vector(text: str, dimensions: int = DIM) -> np.ndarray:
    """The unit vector WordEmbedder gives a text."""
    vector = np.zeros(dimensions, dtype=np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in VOCAB:
            vector[VOCAB[word]] += 1.0
    vector[BIAS_AXIS] = 0.01
    return vector / np.linalg.norm(vector)


@dataclass(frozen=True)
class Picture:
    """One image of the test library: its size, colour, and the words its embedding is made of."""

    name: str
    width: int
    height: int
    colour: tuple[int, int, int]
    words: str | None  # None: not embedded yet


NAMED = [
    Picture("red-bicycle-snow.jpg", 900, 600, (200, 30, 30), "red bicycle snow"),
    Picture("blue-sea.jpg", 600, 900, (30, 60, 200), "blue sea"),
    Picture("green-forest.png", 1200, 400, (30, 160, 60), "green forest"),
    Picture("red-car.jpg", 800, 800, (220, 40, 20), "red car"),
    Picture("cat.jpg", 500, 700, (120, 110, 100), "cat"),
    Picture(HOSTILE, 640, 480, (90, 90, 140), "cat sea"),
    Picture("waiting.jpg", 700, 500, (80, 80, 80), None),
]


def fillers(count: int) -> list[Picture]:
    """Unremarkable pictures of assorted shapes, so the grid has pages to scroll."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        ratio = float(rng.choice([0.5, 0.66, 0.75, 1.0, 1.33, 1.5, 1.78, 2.4]))
        height = int(rng.integers(300, 700))
        colour = tuple(int(c) for c in rng.integers(40, 220, size=3))
        out.append(Picture(f"filler-{i:03d}.jpg", max(1, int(height * ratio)), height, colour, ""))
    return out


def draw(picture: Picture) -> Image.Image:
    """A picture with some structure (so thumbnails look like something in screenshots)."""
    image = Image.new("RGB", (picture.width, picture.height), picture.colour)
    pen = ImageDraw.Draw(image)
    w, h = picture.width, picture.height
    lighter = tuple(min(255, c + 60) for c in picture.colour)
    pen.ellipse((w * 0.2, h * 0.2, w * 0.8, h * 0.8), fill=lighter)
    pen.rectangle((0, h * 0.85, w, h), fill=tuple(max(0, c - 40) for c in picture.colour))
    return image


def filler_vector(name: str, dimensions: int = DIM) -> np.ndarray:
    """A fixed random direction away from the vocabulary's axes."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    vector = np.zeros(dimensions, dtype=np.float32)
    vector[200:] = rng.normal(size=dimensions - 200)
    return vector / np.linalg.norm(vector)


def build_library(pg_url: str, root: Path, n_fillers: int = 30) -> Settings:
    """Empty the tables, write the pictures, run the real `loader sync`, then store embeddings."""
    with connect(pg_url) as conn:
        conn.execute("DROP TABLE IF EXISTS image_embeddings, image_browser_schema CASCADE")
    images = root / "images"
    images.mkdir(parents=True)
    pictures = fillers(n_fillers) + NAMED  # named last: every row shares one created_at, ids decide
    for picture in pictures:
        draw(picture).save(images / picture.name)
    settings = Settings(images_dir=images, data_dir=root / "data", database_url=pg_url)
    with connect(pg_url) as conn:
        Schema(conn).ensure(DIM)
        report = run_sync(Catalogue(conn), open_storage(settings), images, jobs=2,
                          max_pixels=settings.max_image_pixels, progress=False)
        assert not report.failed, report.failed
        for picture in pictures:
            if picture.words is None:
                continue
            vector = text_vector(picture.words) if picture.words else filler_vector(picture.name)
            conn.execute(
                """UPDATE image_embeddings SET embedding = %s, embedding_model = 'test/word-vectors',
                   embedded_at = now() WHERE filename = %s""",
                (vector, picture.name),
            )
    return settings


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    """A small PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def blank_png(width: int, height: int, mode: str = "RGBA", rows: int | None = None) -> bytes:
    """A PNG of transparent black (or black) pixels, written row by row.

    Small on disk however many pixels it has (zlib folds the zeros), and built without
    ever holding the decoded image: what a hostile upload looks like. `rows` < height
    makes a truncated one.
    """
    channels = {"RGBA": (6, 4), "RGB": (2, 3), "L": (0, 1)}[mode]
    rows = height if rows is None else rows
    compressor = zlib.compressobj(1)
    block = b"\x00" * (1 + width * channels[1]) * 64  # filter byte "None", then the pixels
    data = b"".join(compressor.compress(block) for _ in range(rows // 64))
    data += compressor.compress(block[: (rows % 64) * (1 + width * channels[1])])
    data += compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, channels[0], 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


# --- the real `browse` command in its own process ----------------------------------------

ROOT = Path(__file__).resolve().parent.parent
BROWSE = ROOT / ".venv" / "bin" / "browse"
# Variables of the developer's environment that must not leak into a server under test.
FOREIGN = ("SUPABASE_DB_URL", "DB_URL", "REPLICATE_API_TOKEN", "REPLICATE_BASE_URL", "EMBEDDER",
           "IMAGES_DIR", "DATA_DIR", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY",
           "R2_BUCKET", "IMAGE_BASE_URL", "CLIP_MODEL_PATH")


@dataclass
class LiveBrowse:
    """A running `browse` process and where it listens."""

    process: subprocess.Popen
    url: str

    def peak_rss(self) -> int:
        """The process's peak resident memory so far, in bytes (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc")

    def get(self, path: str, timeout: float = 30, **headers: str) -> tuple[int, dict, bytes]:
        """GET a path: (status, headers, body), error statuses included."""
        return http(self.url + path, timeout=timeout, headers=headers)

    def post(self, path: str, body: bytes, timeout: float = 60) -> tuple[int, dict, bytes]:
        """POST raw bytes to a path."""
        return http(self.url + path, body, timeout=timeout,
                    headers={"Content-Type": "application/octet-stream"})


def http(url: str, body: bytes | None = None, *, timeout: float,
         headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request with urllib: (status, headers, body), error statuses included."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def browse_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `browse` process serving `settings`' library."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith("BROWSE_")}
    env.update(SUPABASE_DB_URL=settings.database_url or "", IMAGES_DIR=str(settings.images_dir),
               DATA_DIR=str(settings.data_dir), EMBEDDER="none", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@contextmanager
def running_browse(env: dict[str, str], *args: str, ready_s: float = 60) -> Iterator[LiveBrowse]:
    """Start the real `browse` command on a free port; stop it (SIGTERM, then SIGKILL) after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([str(BROWSE), "--port", str(port), *args], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    live = LiveBrowse(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + ready_s
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"browse did not start: {log.read().decode(errors='replace')}")
            time.sleep(0.1)
        yield live
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
