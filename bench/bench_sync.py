"""Benchmark `loader sync` on generated camera-like JPEGs (run by hand).

    .venv/bin/python bench/bench_sync.py [--files 10000] [--workdir bench/out/sync]

Measures, in one run on the same files (hot in the page cache):
  1. a plain one-process loop of Pillow open -> draft -> load (the baseline),
  2. the first `sync` to local storage (fresh embedded database),
  3. a no-op re-sync,
  4. our dimension reader against Pillow's `Image.open(...).size`.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from loader.sync import run_sync
from shared.database import start_embedded
from shared.dimensions import display_size
from shared.imagefile import THUMBNAIL_EDGE
from shared.storage import LocalStorage
from shared.store import Catalogue, Schema, connect

SIZES = [(2048, 1536), (1632, 1224), (2400, 1600)]  # 3.1, 2.0 and 3.8 megapixels
BASES = 24


def camera_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth light falloff, a few shapes and sensor noise: compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    gradient = (x / width)[..., None] * rng.uniform(-60, 60, 3) + (y / height)[..., None] * rng.uniform(-60, 60, 3)
    pixels = base + gradient
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(50, 400)
        mask = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
        pixels[mask] += rng.uniform(-80, 80, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def generate(folder: Path, count: int) -> None:
    """Encode a few distinct photos, then write `count` files that differ in their EXIF."""
    rng = np.random.default_rng(2026)
    bases = []
    for i in range(BASES):
        w, h = SIZES[i % len(SIZES)]
        out = io.BytesIO()
        camera_like(rng, w, h).save(out, "JPEG", quality=90)
        bases.append(out.getvalue())
    for i in range(count):
        exif = Image.Exif()
        exif[0x0112] = (1, 6, 8, 3)[i % 4] if i % 3 == 0 else 1  # a third are rotated
        exif[0x010E] = f"frame {i}"  # ImageDescription: makes every file's hash unique
        target = folder / f"{i // 1000:02d}" / f"IMG_{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(with_exif(bases[i % BASES], exif.tobytes()))


def with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """Insert an APP1 EXIF segment right after SOI, leaving the compressed scan untouched."""
    payload = exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


def baseline(paths: list[Path]) -> float:
    """One process, Pillow open -> draft to thumbnail size -> load."""
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            w, h = image.size
            scale = THUMBNAIL_EDGE / max(w, h)
            image.draft("RGB", (int(w * scale), int(h * scale)))
            image.load()
    return time.perf_counter() - started


def dimension_readers(paths: list[Path]) -> tuple[float, float]:
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.size
    pillow = time.perf_counter() - started
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            display_size(f)
    ours = time.perf_counter() - started
    return pillow, ours


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/sync"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    images = args.workdir / "images"
    if not images.exists() or len(files_of(images)) != args.files:
        shutil.rmtree(images, ignore_errors=True)
        started = time.perf_counter()
        generate(images, args.files)
        print(f"generated {args.files} files in {time.perf_counter() - started:.0f} s")
    paths = files_of(images)
    total_bytes = sum(p.stat().st_size for p in paths)
    megapixels = statistics.mean(Image.open(p).size[0] * Image.open(p).size[1] for p in paths[:50]) / 1e6
    print(f"{len(paths)} files, {total_bytes / 1e9:.2f} GB, ~{megapixels:.1f} MP each, "
          f"{platform.machine()} with {os.cpu_count()} CPUs")

    base = baseline(paths)
    print(f"baseline Pillow open->draft->load, 1 process: {base:.1f} s = {len(paths) / base:.0f} files/s")

    shutil.rmtree(args.workdir / "pg", ignore_errors=True)
    shutil.rmtree(args.workdir / "thumbs", ignore_errors=True)
    conn = connect(start_embedded(args.workdir / "pg"))
    Schema(conn).ensure(768)
    catalogue = Catalogue(conn)
    storage = LocalStorage(images, args.workdir / "thumbs")
    first = run_sync(catalogue, storage, images, jobs=args.jobs, max_pixels=178_956_970, progress=False)
    assert not first.failed and first.new == len(paths)
    print(f"first sync (jobs={args.jobs}): {first.seconds:.1f} s = {len(paths) / first.seconds:.0f} files/s, "
          f"{first.bytes_read / first.seconds / 1e6:.0f} MB/s -> {base / first.seconds:.2f}x the baseline")

    again = run_sync(catalogue, storage, images, jobs=args.jobs, max_pixels=178_956_970, progress=False)
    assert again.unchanged == len(paths) and again.new == again.changed == 0
    print(f"no-op re-sync: {again.seconds:.3f} s")

    pillow, ours = dimension_readers(paths)
    print(f"dimensions: Pillow Image.open().size {pillow:.2f} s ({len(paths) / pillow:.0f}/s), "
          f"ours (with orientation) {ours:.2f} s ({len(paths) / ours:.0f}/s) -> {pillow / ours:.2f}x")


if __name__ == "__main__":
    main()
