"""Measure MLX float32/float16 matmul GFLOP/s with and without the fast-BLAS loader (run by hand)."""

from __future__ import annotations

import argparse
import time


def gflops(n: int = 1024, repeats: int = 10, dtype: str = "float32") -> float:
    """Time an n x n matmul in MLX and return GFLOP/s."""
    import mlx.core as mx

    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a @ b)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * n**3 / seconds / 1e9


def main() -> None:
    """Print which BLAS MLX uses and its matmul speed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-fast-blas", action="store_true", help="keep the wheel's own BLAS")
    parser.add_argument("--n", type=int, default=1024)
    args = parser.parse_args()
    if not args.no_fast_blas:
        from shared.clip.blas import load_fast_blas

        print("BLAS:", load_fast_blas().describe())
    else:
        print("BLAS: the mlx wheel's bundled reference BLAS")
    for dtype, repeats in (("float32", 10), ("float16", 2)):
        print(f"{dtype} {args.n}x{args.n} matmul: {gflops(args.n, repeats, dtype):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
