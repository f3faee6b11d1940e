"""Benchmark `loader embed` against the local Replicate stand-in (run by hand).

Seeds ROWS rows straight into a fresh embedded Postgres, starts the fake server with
LATENCY seconds per prediction and a RATE/minute limit that it enforces with 429 +
Retry-After, then backfills through the real client and prints one JSON line.

    PYTHONPATH=.:mlx-local:tests python bench/bench_embed.py --rows 2000 --rate 600 --latency 0.3 --jobs 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "mlx-local"), str(ROOT / "tests")]

from fake_replicate import TOKEN, FakeReplicate  # noqa: E402

from loader.embed import EmbedOptions, run_embed  # noqa: E402
from shared.database import start_embedded  # noqa: E402
from shared.embedders.factory import make_embedder  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.store import Catalogue, ImageRecord, Schema, connect  # noqa: E402


class PublicUrls:
    """Storage as R2 looks to the embedder: every original has a public URL."""

    kind = "r2"

    def original_url(self, key: str) -> str:
        return f"https://images.example/{key}"

    def read_original(self, key: str) -> bytes:
        raise AssertionError("the benchmark sends URLs only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=600, help="predictions per minute, server and client")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per prediction")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--burst", type=float, default=5, help="the server's token-bucket size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(start_embedded(Path(tmp) / "postgres"))
        Schema(conn).ensure(768)
        catalogue = Catalogue(conn)
        catalogue.upsert_images(
            ImageRecord(f"photos/{i:06d}.jpg", 640, 480, 1000, hashlib.sha256(str(i).encode()).hexdigest(),
                        "JPEG", 0, None)
            for i in range(args.rows)
        )
        server = FakeReplicate().start()
        server.latency = args.latency
        server.limit(args.rate, burst=args.burst)
        embedder = make_embedder(Settings(
            images_dir=Path(tmp), data_dir=Path(tmp), replicate_api_token=TOKEN,
            replicate_base_url=server.url, replicate_max_per_minute=int(args.rate),
        ), backend="replicate")
        report = run_embed(conn, embedder, PublicUrls(), EmbedOptions(jobs=args.jobs), progress=False)
        counts = catalogue.counts()
        server.stop()
        conn.close()

    result = {
        "rows": args.rows, "rate_limit_per_minute": args.rate, "latency_s": args.latency, "jobs": args.jobs,
        "server_burst": args.burst, "embedded": report.embedded, "failed": len(report.failed),
        "stored": counts.embedded, "seconds": report.seconds,
        "images_per_minute": round(report.per_minute, 1),
        "ratio_to_ceiling": round(report.per_minute / args.rate, 3),
        "throttled_429": server.stats["throttled"], "creates": server.stats["creates"],
        "db_ms_per_row": round(1000 * report.db_seconds / max(1, report.embedded), 3),
        "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
