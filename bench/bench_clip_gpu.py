"""CLIP ViT-L/14 (random weights) on one GPU: the app's MLX code vs transformers/PyTorch (run by hand).

    # here, once: the model's config.json and CLIP's vocabulary (made from the tests' data) go
    # to .gpu/, a git-ignored folder the GPU machine is sent
    PYTHONPATH=. python bench/bench_clip_gpu.py --prepare
    # on the GPU machine (mlx[cuda13] with LD_LIBRARY_PATH at the nvidia/*/lib folders beside
    # its PyTorch, torch with CUDA, transformers); the random weights are written there, to
    # bench/out/gpu/ (1.7 GB, seconds)
    PYTHONPATH=. python bench/bench_clip_gpu.py [--batches 32,128,256] [--repeats 10]
    # the same logic on a tiny model, on any machine's CPU
    PYTHONPATH=. python bench/bench_clip_gpu.py --tiny --prepare && \
        PYTHONPATH=. python bench/bench_clip_gpu.py --tiny

Measures what bench_clip.py cannot on a CPU. Images per second for several batch sizes, from
preprocessed float32 pixels in host memory to unit vectors in host memory (what the app does),
plus the model alone on pixels already on the GPU; one-query text latency (p50/p95); and the
fidelity of MLX in float16 (as the app builds it on a GPU), of MLX in float32 and of
transformers in float16 against transformers in float32 (no TF32), on the same weights and
inputs (16 images, 16 texts). MLX runs through `make_embedder(settings, backend="mlx")`;
PyTorch runs transformers' CLIPModel in float16 with SDPA attention. Each framework runs in its
own process, one after the other; a job that fails is reported and the others still run. One
JSON summary goes to stdout, and to $OUT/gpu_bench.json when OUT is set.

Without CUDA (a CPU-only machine) only --tiny runs, on the CPU in float32: that checks the
logic, and the JSON says it is no GPU measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench_clip import QUERIES, percentiles, timed_each

ROOT = Path(__file__).resolve().parents[1]
PREPARED = ROOT / ".gpu"  # config + vocabulary, made here: the GPU machine has no tests' fixtures
CHECKPOINTS = ROOT / "bench" / "out" / "gpu"  # random weights, made where the benchmark runs
FIDELITY_COUNT = 16  # images and texts compared between the frameworks
TEXT_LENGTH = 77


def model_name(tiny: bool) -> str:
    """The folder name of the model under .gpu/ and bench/out/gpu/."""
    return "tiny" if tiny else "vit-l-14"


def prepare(tiny: bool) -> Path:
    """Write config.json, vocab.json and merges.txt for the model to .gpu/<name>/ (run here)."""
    sys.path.insert(0, str(ROOT))
    from transformers import CLIPConfig

    from tests.conftest import (
        TINY_TEXT,
        TINY_VISION,
        VIT_L_14_PROJECTION,
        VIT_L_14_TEXT,
        VIT_L_14_VISION,
        write_vocab_files,
    )

    text, vision, dims = (
        (TINY_TEXT, TINY_VISION, 24)
        if tiny
        else (VIT_L_14_TEXT, VIT_L_14_VISION, VIT_L_14_PROJECTION)
    )
    folder = PREPARED / model_name(tiny)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPConfig(text_config=text, vision_config=vision, projection_dim=dims).save_pretrained(folder)
    write_vocab_files(folder)
    return folder


def make_checkpoint(tiny: bool) -> Path:
    """Save a random-weight CLIPModel (seed 0) from the prepared config, once."""
    source, folder = PREPARED / model_name(tiny), CHECKPOINTS / model_name(tiny)
    if (folder / "model.safetensors").is_file():
        return folder
    if not (source / "config.json").is_file():
        raise SystemExit(f"{source} is missing: run this script with --prepare where tests run")
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig.from_pretrained(source)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(source / name, folder / name)
    return folder


def image_size(folder: Path) -> int:
    """The checkpoint's input width and height."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return int(config["vision_config"]["image_size"])


def pixels(batch: int, size: int, seed: int = 0):
    """Preprocessed-looking (batch, size, size, 3) float32 pixels: CLIP-normalised, roughly N(0, 1)."""
    import numpy as np

    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def throughput(run: Callable[[], object], images: int, repeats: int) -> dict:
    """Images/s over `repeats` calls after two warm-ups (the first compiles); `run` must sync."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return {
        "median": round(images / statistics.median(seconds), 1),
        "best": round(images / min(seconds), 1),
        "first_call_s": round(first, 3),
    }


def latency(run: Callable[[str], object], queries: int) -> dict:
    """p50/p95 of one query at a time, after one warm-up pass over every distinct query."""
    texts = (QUERIES * 10)[:queries]
    return percentiles(timed_each(run, texts, warmup=len(QUERIES)), digits=2)  # GPU: a few ms


def unit_rows(vectors):
    """Rows scaled to length 1 (float32 numpy)."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def job_mlx(args) -> dict:
    """The app's MLX embedder: speed, then vectors for the fidelity check (float16 and float32)."""
    import mlx.core as mx
    import numpy as np

    folder = CHECKPOINTS / model_name(args.tiny)
    if mx.default_device() != mx.gpu and not args.tiny:
        raise SystemExit(f"MLX runs on {mx.default_device()}, not a GPU: ViT-L/14 skipped")
    start = time.perf_counter()
    embedder = app_embedder(folder)
    result = {
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
        "device_info": device_info(mx),
        "dtype": str(embedder.load().model.dtype),
        "cpu_path": embedder.load().model.cpu_path,
        "load_s": round(time.perf_counter() - start, 2),
        **mlx_speed(mx, embedder, image_size(folder), args),
    }
    images = pixels(FIDELITY_COUNT, image_size(folder), seed=1)
    texts = QUERIES[:FIDELITY_COUNT]
    tokenizer = embedder.load().tokenizer
    vectors = {
        "ids": np.array(tokenizer.encode_padded(texts)),
        "app_images": embedder.load().model.encode_images(images),
        "app_texts": embedder.embed_texts(texts),
    }
    del embedder  # frees the float16 weights before the float32 copy loads
    gc.collect()
    mx.clear_cache()
    vectors.update(mlx_float32_vectors(folder, images, tokenizer.encode(texts)))
    result["peak_memory_gb"] = round(mx.get_peak_memory() / 1e9, 2)
    np.savez(args.vectors / "mlx.npz", **vectors)
    return result


def mlx_speed(mx, embedder, size: int, args) -> dict:
    """Images/s from host pixels to host unit vectors, of the graph alone, and text latency."""
    model, tokenizer = embedder.load().model, embedder.load().tokenizer
    largest = max(args.batches)
    features = mx.compile(model.image_features)  # the graph encode_images runs off the CPU path
    on_device = mx.array(pixels(largest, size))
    mx.eval(on_device)
    return {
        "images_per_s": {
            str(batch): throughput(
                partial(model.encode_images, pixels(batch, size)), batch, args.repeats
            )
            for batch in args.batches
        },
        "model_only_images_per_s": {
            "batch": largest,
            **throughput(lambda: mx.eval(features(on_device)), largest, args.repeats),
        },
        "query_to_end_token": latency(lambda t: embedder.embed_texts([t]), args.queries),
        "query_padded_to_77": latency(
            lambda t: model.encode_text(tokenizer.encode_padded([t])), args.queries
        ),
    }


def app_embedder(folder: Path):
    """MlxClipEmbedder built as the apps build it, with the checkpoint's own vector width."""
    from shared.embedders.factory import make_embedder
    from shared.settings import Settings

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    settings = Settings(
        images_dir=Path("."),
        data_dir=Path("."),
        clip_model_path=folder,
        expected_vector_dim=int(config["projection_dim"]),
    )
    return make_embedder(settings, backend="mlx")


def mlx_float32_vectors(folder: Path, images, ids: list[list[int]]) -> dict:
    """The same inputs through the same code with float32 weights (MLX's default device)."""
    from shared.clip.loading import load_model

    model = load_model(folder, dtype="float32")
    return {"float32_images": model.encode_images(images), "float32_texts": model.encode_text(ids)}


def device_info(mx) -> dict:
    """What MLX says about its device (name, memory), where it says anything."""
    try:
        info = mx.device_info()
    except (AttributeError, RuntimeError) as exc:  # not in every MLX release
        return {"error": repr(exc)}
    return {key: value for key, value in info.items() if isinstance(value, (str, int, float))}


def job_torch(args) -> dict:
    """transformers' CLIPModel: float16 + SDPA on CUDA (float32 on a CPU), then float32 vectors."""
    import numpy as np
    import torch
    import transformers
    from transformers import CLIPTokenizer

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        raise SystemExit("PyTorch sees no CUDA device: ViT-L/14 skipped")
    # The float32 reference must stay float32: no TF32 in matrix products or the patch conv.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    folder = CHECKPOINTS / model_name(args.tiny)
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    start = time.perf_counter()
    model = torch_model(folder, dtype, device)
    result = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "device": device,
        "dtype": str(dtype),
        "attention": getattr(model.config, "_attn_implementation", None),
        "load_s": round(time.perf_counter() - start, 2),
    }
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    result.update(torch_speed(model, tokenizer, image_size(folder), args))
    vectors = torch_vectors(model, tokenizer, image_size(folder), "fp16" if cuda else "run")
    del model
    gc.collect()
    if cuda:
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        torch.cuda.empty_cache()
    vectors.update(
        torch_vectors(
            torch_model(folder, torch.float32, device), tokenizer, image_size(folder), "fp32"
        )
    )
    np.savez(args.vectors / "torch.npz", **vectors)
    return result


def torch_model(folder: Path, dtype, device: str):
    """CLIPModel in `dtype` on `device`, SDPA attention, eval mode."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()


def torch_features(output):
    """The projected embedding (transformers 5 returns an output object; 4.x a tensor)."""
    return output if hasattr(output, "float") else output.pooler_output


def torch_speed(model, tokenizer, size: int, args) -> dict:
    """Images/s (host pixels to host unit vectors, and model only) and text latency."""
    import torch

    device, dtype = model.device, model.dtype
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @torch.inference_mode()
    def images(batch):
        pixel_values = torch.from_numpy(batch).to(device, dtype)
        return unit_rows(
            torch_features(model.get_image_features(pixel_values=pixel_values)).float().cpu()
        )

    @torch.inference_mode()
    def on_device(pixel_values):
        torch_features(model.get_image_features(pixel_values=pixel_values))
        sync()

    @torch.inference_mode()
    def query(text, padding):
        ids = tokenizer(
            [text], padding=padding, max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        )["input_ids"].to(device)
        return unit_rows(torch_features(model.get_text_features(input_ids=ids)).float().cpu())

    largest = max(args.batches)
    resident = torch.from_numpy(nchw(pixels(largest, size))).to(device, dtype)
    return {
        "images_per_s": {
            str(batch): throughput(partial(images, nchw(pixels(batch, size))), batch, args.repeats)
            for batch in args.batches
        },
        "model_only_images_per_s": {
            "batch": largest,
            **throughput(lambda: on_device(resident), largest, args.repeats),
        },
        "query_unpadded": latency(lambda t: query(t, False), args.queries),
        "query_padded_to_77": latency(lambda t: query(t, "max_length"), args.queries),
    }


def torch_vectors(model, tokenizer, size: int, label: str) -> dict:
    """Unit vectors for the fidelity images and texts (texts padded to 77 with the end token)."""
    import torch

    device, dtype = model.device, model.dtype
    ids = tokenizer(
        QUERIES[:FIDELITY_COUNT],
        padding="max_length",
        max_length=TEXT_LENGTH,
        truncation=True,
        return_tensors="pt",
    )["input_ids"]
    images = torch.from_numpy(nchw(pixels(FIDELITY_COUNT, size, seed=1))).to(device, dtype)
    with torch.inference_mode():
        image_vectors = torch_features(model.get_image_features(pixel_values=images))
        text_vectors = torch_features(model.get_text_features(input_ids=ids.to(device)))
    return {
        "ids": ids.numpy(),
        f"{label}_images": unit_rows(image_vectors.float().cpu()),
        f"{label}_texts": unit_rows(text_vectors.float().cpu()),
    }


def nchw(batch):
    """NHWC pixels (MLX's layout) as contiguous NCHW (PyTorch's)."""
    import numpy as np

    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


JOBS = {"mlx": job_mlx, "torch": job_torch}


def run_job(job: str, args) -> dict:
    """Run one job in a fresh process; its JSON, or what went wrong (the other jobs still run)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-X",
        "faulthandler",
        __file__,
        "--job",
        job,
        "--batches",
        ",".join(map(str, args.batches)),
        "--repeats",
        str(args.repeats),
        "--queries",
        str(args.queries),
        *(["--tiny"] if args.tiny else []),
    ]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, check=False, env=env, capture_output=True, text=True, timeout=args.job_timeout
        )
    except subprocess.TimeoutExpired as exc:
        partial_err = exc.stderr or b""  # bytes here even with text=True
        sys.stderr.write(
            partial_err.decode(errors="replace") if isinstance(partial_err, bytes) else partial_err
        )
        return {"error": f"timed out after {args.job_timeout} s"}
    sys.stderr.write(done.stderr)  # warnings and tracebacks, into the run's log
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit code {done.returncode}", "stderr_tail": done.stderr[-3000:]}
    return {**json.loads(lines[-1]), "job_s": round(time.perf_counter() - start, 1)}


def cosines(a, b) -> dict:
    """Row-wise cosine similarity of two (n, d) arrays: min, mean and rows that are not finite."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if not finite.any():
        return {"min": None, "mean": None, "non_finite_rows": len(a)}
    a, b = a[finite], b[finite]
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "min": round(float(cos.min()), 7),
        "mean": round(float(cos.mean()), 7),
        "max_1_minus_cos": float(f"{1 - cos.min():.3g}"),
        "non_finite_rows": int((~finite).sum()),
    }


def fidelity(folder: Path) -> dict:
    """Each run's vectors against transformers in float32 on the same device, images and texts."""
    import numpy as np

    runs = {
        name: dict(np.load(folder / f"{name}.npz"))
        for name in JOBS
        if (folder / f"{name}.npz").is_file()
    }
    if "torch" not in runs:
        return {"error": "no reference vectors: the torch job failed"}
    reference = runs["torch"]
    own = "fp16" if "fp16_images" in reference else "run"  # "run": float32 on a CPU
    pairs = {f"torch_{own}_vs_torch_fp32": (reference, own)}
    if "mlx" in runs:
        pairs["mlx_app_vs_torch_fp32"] = (runs["mlx"], "app")
        pairs["mlx_float32_vs_torch_fp32"] = (runs["mlx"], "float32")
    result = {
        name: {
            kind: cosines(vectors[f"{prefix}_{kind}"], reference[f"fp32_{kind}"])
            for kind in ("images", "texts")
        }
        for name, (vectors, prefix) in pairs.items()
    }
    if "mlx" in runs:
        result["same_token_ids"] = bool(np.array_equal(runs["mlx"]["ids"], reference["ids"]))
    result["count"] = FIDELITY_COUNT
    return result


def nvidia_smi() -> str | None:
    """The GPU, driver and memory as nvidia-smi reports them (None without one)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def ratios(result: dict) -> dict:
    """MLX images/s over PyTorch images/s (medians), per batch and for the model alone."""
    mlx, torch = result.get("mlx", {}), result.get("torch", {})
    if "error" in mlx or "error" in torch:
        return {}
    out = {
        batch: round(mlx["images_per_s"][batch]["median"] / speed["median"], 2)
        for batch, speed in torch["images_per_s"].items()
    }
    out["model_only"] = round(
        mlx["model_only_images_per_s"]["median"] / torch["model_only_images_per_s"]["median"], 2
    )
    return out


def benchmark(args) -> dict:
    """Make the checkpoint, run each job in its own process, compare their vectors."""
    start = time.perf_counter()
    result = {
        "model": f"{model_name(args.tiny)}, random weights (seed 0)",
        "nvidia_smi": nvidia_smi(),
        "python": sys.version.split()[0],
    }
    folder = make_checkpoint(args.tiny)
    result["checkpoint_ready_s"] = round(time.perf_counter() - start, 1)
    args.vectors.mkdir(parents=True, exist_ok=True)
    for stale in args.vectors.glob("*.npz"):
        stale.unlink()
    for job in JOBS:
        result[job] = run_job(job, args)
        print(f"{job}: {json.dumps(result[job])[:400]}", file=sys.stderr, flush=True)
        save(result)  # what is done so far survives a run stopped from outside
    result["fidelity"] = fidelity(args.vectors)
    result["images_ratio_mlx_over_torch"] = ratios(result)
    if result["torch"].get("gpu") is None and result["nvidia_smi"] is None:
        result["note"] = "no CUDA GPU here: CPU numbers that test the script, not a GPU result"
    result["checkpoint"] = str(folder)
    result["total_s"] = round(time.perf_counter() - start, 1)
    return result


def save(result: dict) -> str:
    """The summary as JSON, also written to $OUT/gpu_bench.json when OUT is set."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_bench.json").write_text(text + "\n", encoding="utf-8")
    return text


def main() -> None:
    """--prepare here, then the benchmark on the GPU machine; --job runs one job (internal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write .gpu/<model>/ and stop")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny CLIP, not ViT-L/14")
    parser.add_argument(
        "--batches", default="32,128,256", type=lambda text: [int(b) for b in text.split(",")]
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--job-timeout", type=int, default=180, help="seconds per job")
    parser.add_argument("--job", choices=sorted(JOBS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.vectors = CHECKPOINTS / f"{model_name(args.tiny)}-vectors"
    if args.prepare:
        print(f"wrote {prepare(args.tiny)}")
        return
    if args.job:
        if args.job == "mlx":
            import shared.clip  # noqa: F401  (fast BLAS before mlx.core)
        print(json.dumps(JOBS[args.job](args)))
        return
    result = benchmark(args)
    print(save(result))
    if any("error" in result[job] for job in JOBS):
        sys.exit(1)  # the JSON above says which job failed and why


if __name__ == "__main__":
    main()
