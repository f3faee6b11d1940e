"""MLX is pointed at a fast BLAS on Linux, and its answers stay those of numpy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shared.clip  # noqa: F401  (loads the fast BLAS before mlx.core, as the package does)
from shared.clip import blas

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")
AVAILABLE = LINUX and any(Path(p).exists() for p in blas.candidate_paths() if p.startswith("/"))

MATMUL = "import mlx.core as mx; mx.eval(mx.ones((128, 128)) @ mx.ones((128, 128)))"


def sgemm_binding(code: str) -> Path:
    """Run `code` in a fresh process and return the library libmlx's cblas_sgemm bound to."""
    env = {**os.environ, "LD_DEBUG": "bindings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in done.stderr.splitlines():
        if "libmlx.so" in line and "`cblas_sgemm'" in line:
            target = line.split(" to ", 1)[1].split(" [", 1)[0]
            return Path(target).resolve()
    raise AssertionError("libmlx.so never bound cblas_sgemm")


@pytest.mark.skipif(
    not AVAILABLE, reason="no OpenBLAS/MKL/BLIS installed (apt-get install libopenblas0-pthread)"
)
def test_fast_blas_is_loaded_and_reported():
    info = blas.load_fast_blas()
    assert info.fast and info.name in ("openblas", "mkl", "blis")
    assert info.path and Path(info.path).is_file()
    assert info.describe().startswith(info.name)


@pytest.mark.skipif(not AVAILABLE, reason="no OpenBLAS/MKL/BLIS installed")
def test_mlx_binds_cblas_to_the_reported_library():
    reported = Path(blas.load_fast_blas().path).resolve()
    assert sgemm_binding("import shared.clip; " + MATMUL) == reported
    # Control: without the package, the wheel's own reference BLAS answers.
    bundled = sgemm_binding(MATMUL)
    assert bundled != reported and "mlx_cpu.libs" in str(bundled)


def test_results_equal_numpy():
    import mlx.core as mx

    rng = np.random.default_rng(0)
    a = rng.normal(size=(257, 129)).astype(np.float32)
    b = rng.normal(size=(129, 65)).astype(np.float32)
    np.testing.assert_allclose(np.array(mx.array(a) @ mx.array(b)), a @ b, rtol=1e-4, atol=1e-4)


def test_libraries_without_cblas_are_passed_over():
    info = blas.find_blas(["/nonexistent/libopenblas.so.0", "libc.so.6"])
    assert not info.fast and info.path is None
    assert info.tried == ("/nonexistent/libopenblas.so.0", "libc.so.6")


@pytest.mark.skipif(not LINUX, reason="the warning is for Linux")
def test_warning_names_the_package_when_nothing_is_found():
    # blas.py loaded on its own in a fresh process, so the package's own call does not run first.
    code = (
        "import importlib.util, logging, sys;"
        "logging.basicConfig(format='%(levelname)s %(message)s');"
        f"spec = importlib.util.spec_from_file_location('b', {str(ROOT / 'shared/clip/blas.py')!r});"
        "b = sys.modules['b'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(b);"
        "print(b.load_fast_blas(['/nonexistent/libopenblas.so.0']).fast)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert "WARNING no fast BLAS found for MLX (tried 1 libraries)" in done.stderr
    assert "apt-get install libopenblas0-pthread" in done.stderr


@pytest.mark.skipif(not AVAILABLE, reason="no OpenBLAS installed")
def test_blas_threads_are_set_and_restored():
    lib = next((h for h in blas._handles if hasattr(h, "openblas_get_num_threads")), None)
    if lib is None:
        pytest.skip("the loaded BLAS is not OpenBLAS")
    before = lib.openblas_get_num_threads()
    with blas.blas_threads(1):
        assert lib.openblas_get_num_threads() == 1
    assert lib.openblas_get_num_threads() == before


ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
flags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def test_openblas_gets_its_avx512_kernels_on_amd():
    assert blas.openblas_coretype({}, ZEN5) == "SkylakeX"


@pytest.mark.parametrize(
    "environ,cpuinfo",
    [
        ({"OPENBLAS_CORETYPE": "Haswell"}, ZEN5),  # the user's choice stands
        ({}, ZEN5.replace("AuthenticAMD", "GenuineIntel")),  # OpenBLAS knows Intel's own
        ({}, ZEN5.replace(" avx512bw", "")),  # not every AVX-512 part SkylakeX needs
        ({}, ""),  # no /proc/cpuinfo
    ],
    ids=["user-choice", "intel", "partial-avx512", "unknown-cpu"],
)
def test_openblas_chooses_for_itself_otherwise(environ, cpuinfo):
    assert blas.openblas_coretype(environ, cpuinfo) is None


@pytest.mark.skipif(not AVAILABLE, reason="no OpenBLAS installed")
def test_kernels_are_chosen_at_load_and_the_environment_left_as_it_was():
    code = (
        "import os, shared.clip; from shared.clip import blas; info = blas.load_fast_blas();"
        "print(info.name, info.core, os.environ.get('OPENBLAS_CORETYPE'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    name, core, after = done.stdout.split()
    if name != "openblas":
        pytest.skip("the loaded BLAS is not OpenBLAS")
    assert after == "None"  # the override was for the library's start only
    if blas.openblas_coretype({}, blas._cpuinfo()) == "SkylakeX":
        assert core == "SkylakeX"
