"""How `loader up` feels on first run, measured as a user meets it (run by hand).

A fresh data folder with N generated photos (default 1,000), `loader up` as a process, and:
- seconds from the start to the first page (GET / answers 200), and to the first answer of a
  text search (the model loaded: /api/search answers 200);
- photos embedded per minute over a window (default 120 s) while the backfill runs;
- from a file landing in images/ to its row in /api/images, and (on a small library whose
  backlog is done) to its being embedded, i.e. searchable.

The model is a random-weight copy of openai/clip-vit-large-patch14's shape (the real speed,
not the real answers), built once with transformers into --model (~1.7 GB) and given through
CLIP_MODEL_PATH, so the download is not part of the numbers. Results: docs/benchmarks.md.

    .venv/bin/python bench/bench_up.py [--photos 1000] [--window 120] [--model /tmp/vit-l14]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def build_model(folder: Path) -> None:
    """A random ViT-L/14-shaped CLIP with the real tokenizer files, unless already there."""
    if (folder / "model.safetensors").is_file():
        return
    from conftest import (VIT_L_14_PROJECTION, VIT_L_14_TEXT, VIT_L_14_VISION, save_random_clip,
                          write_vocab_files)
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    write_vocab_files(folder)
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    save_random_clip(folder, VIT_L_14_TEXT, VIT_L_14_VISION, VIT_L_14_PROJECTION)


def make_photos(folder: Path, count: int, start: int = 0) -> None:
    """Photo-sized JPEGs (1600x1200) with shapes and noise, each different."""
    rng = np.random.default_rng(start)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        image = Image.new("RGB", (1600, 1200), colour)
        pen = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = (int(v) for v in rng.integers(0, 1400, 2))
            pen.ellipse((x, y, x + 300, y + 250), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        image.save(folder / f"photo-{i:05d}.jpg", quality=85)


def get(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if "/api/" in url else None
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def until(condition, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(step)
    raise TimeoutError(f"not within {timeout} s")


class Up:
    def __init__(self, home: Path, model: Path) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("SUPABASE_DB_URL", "REPLICATE_API_TOKEN", "EMBEDDER")}
        env.update(IMAGES_DIR=str(home / "images"), DATA_DIR=str(home / "data"),
                   CLIP_MODEL_PATH=str(model), HF_HUB_OFFLINE="1", PROGRESS_EVERY_S="30")
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "loader", "up", "--port", "0"],
                                        env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=open(home / "up.log", "w"), text=True)
        self.url = self.process.stdout.readline().split()[3].rstrip("/")

    def status(self) -> dict:
        return get(self.url + "/api/status")[1] or {}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=300)


def first_run(home: Path, model: Path, photos: int, window: float) -> dict:
    make_photos(home / "images", photos)
    up = Up(home, model)
    page = until(lambda: get(up.url + "/")[0] == 200 and time.monotonic(), 60) - up.started
    search = until(lambda: get(up.url + "/api/search?q=dog")[0] == 200 and time.monotonic(),
                   600, 0.2) - up.started
    until(lambda: up.status().get("counts", {}).get("embedded", 0) > 0, 600, 0.2)
    start_count, start_at = up.status()["counts"]["embedded"], time.monotonic()
    time.sleep(window)
    end = up.status()["counts"]
    per_minute = (end["embedded"] - start_count) * 60 / (time.monotonic() - start_at)
    landed = []
    for i in range(3):  # while the backlog runs: the row does not wait for it
        landed.append(land(up, home, photos + i, embedded=False))
    code = up.stop()
    return {"photos": photos, "first_page_s": round(page, 2), "first_search_s": round(search, 2),
            "embedded_per_minute": round(per_minute, 1), "synced": end["images"],
            "row_after_landing_s": landed, "exit": code}


def land(up: Up, home: Path, index: int, embedded: bool) -> float:
    """Seconds from a photo landing in images/ to its row (or its embedding) in the API."""
    staging = home / "staging"
    make_photos(staging, 1, index)
    name = f"photo-{index:05d}.jpg"
    started = time.monotonic()
    os.replace(staging / name, home / "images" / name)  # lands whole, as a finished copy does

    def there():
        rows = (get(up.url + "/api/images?limit=5")[1] or {}).get("images", [])
        row = next((r for r in rows if r["filename"] == name), None)
        return row is not None and (row["embedded"] or not embedded)

    until(there, 300, 0.02)
    return round(time.monotonic() - started, 2)


def searchable_latency(home: Path, model: Path) -> dict:
    make_photos(home / "images", 8)
    up = Up(home, model)
    until(lambda: (c := up.status().get("counts")) and c["images"] == 8 and c["embedded"] == 8,
          600, 0.2)
    rows = [land(up, home, 100 + i, embedded=False) for i in range(3)]
    until(lambda: up.status()["counts"]["embedded"] == 11, 900, 0.2)  # an idle backfill again
    searchable = [land(up, home, 200 + i, embedded=True) for i in range(3)]
    code = up.stop()
    return {"row_after_landing_s": rows, "searchable_after_landing_s": searchable, "exit": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--model", type=Path, default=Path(tempfile.gettempdir()) / "vit-l14-random")
    args = parser.parse_args()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.strip()
    print(cpu, "| load before:", os.getloadavg(), flush=True)
    build_model(args.model)
    results = {}
    for name, run in (("first_run", lambda h: first_run(h, args.model, args.photos, args.window)),
                      ("small_library", lambda h: searchable_latency(h, args.model))):
        home = Path(tempfile.mkdtemp(prefix="bench-up-"))
        try:
            results[name] = run(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        print(name, json.dumps(results[name]), "| load:", os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
