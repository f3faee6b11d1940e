"""CLIP ViT-L/14 (random weights): MLX vs transformers/PyTorch on this machine's CPU (run by hand).

    PYTHONPATH=.:mlx-local python bench/bench_clip.py [--repeats 3] [--queries 40]

Image embeddings per second (batch 8), one-query text latency (p50/p95) and the peak RSS of
a text-only process. Each measurement runs in its own fresh process, one after another, so
neither framework's threads or memory disturb the other. Weights are random: speed does not
depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "bench" / "out" / "vit-l-14-random"
QUERIES = [
    "a photo of a cat",
    "sunset over the ocean",
    "my daughter's birthday party",
    "dog",
    "東京の夜景",
    "two dogs playing in the snow",
    "red car",
    "christmas tree with presents",
    "beach 🏖️",
    "grandma's kitchen in 1987",
    "the Eiffel Tower at night",
    "a blurry photo",
    "wedding cake",
    "mountain lake",
    "receipt from the grocery store",
    "café in Paris",
    "northern lights",
    "kids on a trampoline",
    "black and white portrait",
    "pizza with extra cheese",
]


def make_checkpoint(folder: Path) -> None:
    """Save a random-weight CLIPModel shaped like openai/clip-vit-large-patch14, once."""
    if (folder / "model.safetensors").is_file():
        return
    sys.path.insert(0, str(ROOT))
    from tests.conftest import (
        VIT_L_14_PROJECTION,
        VIT_L_14_TEXT,
        VIT_L_14_VISION,
        save_random_clip,
        write_vocab_files,
    )

    folder.mkdir(parents=True, exist_ok=True)
    save_random_clip(folder, VIT_L_14_TEXT, VIT_L_14_VISION, projection_dim=VIT_L_14_PROJECTION)
    write_vocab_files(folder)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(times: list[float], digits: int = 1) -> dict:
    times = sorted(times)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"p50_ms": round(statistics.median(times), digits), "p95_ms": round(p95, digits)}


def timed_each(run, items: list, warmup: int = 3) -> list[float]:
    for item in items[:warmup]:
        run(item)
    times = []
    for item in items:
        start = time.perf_counter()
        run(item)
        times.append((time.perf_counter() - start) * 1000)
    return times


def images_per_second(run, batch, repeats: int) -> dict:
    """Median and best throughput over `repeats` batches, after one warm-up batch.

    CPU seconds per image are reported too: other processes on a shared machine stretch
    wall time, much less the CPU time a framework needs.
    """
    run(batch)
    cpu_start = time.process_time()
    seconds = [timed_each(run, [batch], warmup=0)[0] / 1000 for _ in range(repeats)]
    cpu = (time.process_time() - cpu_start) / (repeats * len(batch))
    return {
        "median": round(len(batch) / statistics.median(seconds), 3),
        "best": round(len(batch) / min(seconds), 3),
        "cpu_s_per_image": round(cpu, 2),
    }


def local_clip(text_only: bool = False):
    """The app's MLX CLIP embedder on the benchmark checkpoint, built as the apps build it."""
    from shared.embedders.factory import make_embedder
    from shared.settings import Settings

    settings = Settings(images_dir=Path("."), data_dir=Path("."), clip_model_path=CHECKPOINT)
    return make_embedder(settings, backend="mlx", text_only=text_only)


def job_mlx(args) -> dict:
    """Images/s and query latency with shared.clip (MLX)."""
    import numpy as np

    from shared.clip.blas import load_fast_blas

    embedder = local_clip()
    model, tokenizer = embedder.load().model, embedder.load().tokenizer
    batch = np.random.default_rng(0).normal(size=(8, 224, 224, 3)).astype(np.float32)
    texts = (QUERIES * 10)[: args.queries]
    return {
        "blas": load_fast_blas().describe(),
        "images_per_s": images_per_second(model.encode_images, batch, args.repeats),
        "query_to_end_token": percentiles(timed_each(lambda t: embedder.embed_texts([t]), texts)),
        "query_padded_to_77": percentiles(
            timed_each(lambda t: model.encode_text(tokenizer.encode_padded([t])), texts)
        ),
    }


def job_torch(args) -> dict:
    """The same with transformers' CLIPModel on PyTorch (CPU)."""
    import numpy as np
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(CHECKPOINT).eval()
    tokenizer = CLIPTokenizer(str(CHECKPOINT / "vocab.json"), str(CHECKPOINT / "merges.txt"))
    batch = np.random.default_rng(0).normal(size=(8, 3, 224, 224)).astype(np.float32)
    texts = (QUERIES * 10)[: args.queries]

    def images(pixels):
        with torch.inference_mode():
            model.get_image_features(pixel_values=torch.from_numpy(pixels))

    def query(text, padding):
        ids = tokenizer(
            [text], padding=padding, max_length=77, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            model.get_text_features(input_ids=ids["input_ids"])

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images_per_s": images_per_second(images, batch, args.repeats),
        "query_unpadded": percentiles(timed_each(lambda t: query(t, False), texts)),
        "query_padded_to_77": percentiles(timed_each(lambda t: query(t, "max_length"), texts)),
    }


def job_text_only(args) -> dict:
    """Peak memory of a search process: text tower only, one query."""
    start = time.perf_counter()
    embedder = local_clip(text_only=True)  # loads the weights
    loaded = time.perf_counter() - start
    embedder.embed_texts(["a photo of a cat"])
    return {"load_s": round(loaded, 2), "peak_rss_mb": round(peak_rss_mb())}


JOBS = {"mlx": job_mlx, "torch": job_torch, "text_only": job_text_only}


def main() -> None:
    """Run each job in a fresh process and print one JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="alternate MLX and PyTorch runs")
    parser.add_argument("--job", choices=sorted(JOBS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        if args.job != "torch":
            import shared.clip  # noqa: F401  (fast BLAS before mlx.core)
        print(json.dumps(JOBS[args.job](args)))
        return
    make_checkpoint(CHECKPOINT)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'mlx-local'}"}
    result = {"machine": f"{os.cpu_count()} cores", "load_average_before": os.getloadavg()}
    jobs = [*(["mlx", "torch"] * args.rounds), "text_only"]
    for number, job in enumerate(jobs):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--job",
                job,
                "--repeats",
                str(args.repeats),
                "--queries",
                str(args.queries),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result[f"{number}:{job}"] = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("mlx", "torch"):
        runs = [value for key, value in result.items() if key.endswith(f":{name}")]
        result[f"{name}_images_per_s_median_of_rounds"] = statistics.median(
            run["images_per_s"]["median"] for run in runs
        )
    result["images_ratio_mlx_over_torch"] = round(
        result["mlx_images_per_s_median_of_rounds"] / result["torch_images_per_s_median_of_rounds"],
        2,
    )
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
