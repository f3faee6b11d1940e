"""Make MLX's CPU backend use a fast BLAS on Linux; call before `mlx.core` is imported.

The `mlx[cpu]` wheel links a bundled reference BLAS (`libblas-<hash>.so`, netlib) that
runs float32 matrix products ~35x slower than OpenBLAS. `libmlx.so` imports plain
`cblas_sgemm` (and LAPACK `*_`) symbols, and the dynamic linker resolves them in the
global scope before the library's own dependencies. So loading an OpenBLAS (or MKL,
BLIS) that exports those names with `RTLD_GLOBAL` before `mlx.core` is imported makes
MLX call it instead — no LD_PRELOAD, no rebuild.

OpenBLAS picks its kernels by CPU model when it loads. Releases that predate AMD's AVX-512
CPUs (Zen 4 and 5; Debian 12's 0.3.21 among them) take one for a Haswell and run AVX2
kernels: on the development VM's Zen 5 that is 251 GFLOP/s in float32 against 448 with the
AVX-512 kernels, and a text query ~25 % slower. On an AMD CPU with AVX-512 the library is therefore
loaded with OPENBLAS_CORETYPE=SkylakeX, its AVX-512 kernels, unless the user set that
variable themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import platform
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# The apt package that provides a drop-in OpenBLAS on Debian/Ubuntu.
APT_PACKAGE = "libopenblas0-pthread"
REQUIRED_SYMBOL = "cblas_sgemm"
# What OpenBLAS's SkylakeX kernels need of the CPU (/proc/cpuinfo flag names).
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


@dataclass(frozen=True)
class BlasInfo:
    """Which BLAS MLX will call, and whether it is a fast one."""

    name: str
    path: str | None
    fast: bool
    tried: tuple[str, ...] = field(default=())
    core: str | None = None  # the kernels OpenBLAS chose (or was told) to run

    def describe(self) -> str:
        """One line for logs and benchmarks."""
        core = f", {self.core} kernels" if self.core else ""
        where = f" ({self.path}{core})" if self.path else ""
        return f"{self.name}{where}"


_lock = threading.Lock()
_loaded: BlasInfo | None = None
_handles: list[ctypes.CDLL] = []  # kept alive: unloading would leave MLX with dangling symbols


def candidate_paths() -> Iterator[str]:
    """Shared libraries worth trying, best first: OpenBLAS, then MKL, then BLIS.

    A generator: the well-known paths come first, and the slower searches (ldconfig, via
    ctypes.util.find_library) only run when none of those exists.
    """
    machine = platform.machine()
    prefixes = list(dict.fromkeys([Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]))
    seen: set[str] = set()

    def fresh(paths: Iterable[str | None]) -> Iterator[str]:
        for path in paths:
            if path and path not in seen:
                seen.add(path)
                yield path

    # A conda or pip-installed library beside this Python, then the distributions' places.
    yield from fresh(str(prefix / "libopenblas.so.0") for prefix in prefixes)
    yield from fresh(
        [
            f"/usr/lib/{machine}-linux-gnu/openblas-pthread/libopenblas.so.0",  # Debian/Ubuntu
            f"/usr/lib/{machine}-linux-gnu/openblas-openmp/libopenblas.so.0",
            f"/usr/lib/{machine}-linux-gnu/libopenblas.so.0",
            "/usr/lib64/libopenblasp.so.0",  # Fedora: the pthreads build
            "/usr/lib64/libopenblas.so.0",
            "/usr/lib/libopenblas.so.0",  # Arch, Alpine
        ]
    )
    yield from fresh([ctypes.util.find_library("openblas")])
    for prefix in prefixes:
        yield from fresh(sorted(glob.glob(str(prefix / "libmkl_rt.so*"))))
    yield from fresh([ctypes.util.find_library("mkl_rt"), ctypes.util.find_library("blis")])
    yield from fresh([f"/usr/lib/{machine}-linux-gnu/blis-pthread/libblis.so.4"])


def _kind(path: str) -> str:
    base = Path(path).name
    for kind in ("openblas", "mkl", "blis"):
        if kind in base:
            return kind
    return "blas"


def _try_load(path: str) -> ctypes.CDLL | None:
    if path.startswith("/") and not Path(path).exists():
        return None
    override = openblas_coretype(os.environ, _cpuinfo()) if _kind(path) == "openblas" else None
    try:
        with _environment("OPENBLAS_CORETYPE", override):  # read once, as the library loads
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    return lib if hasattr(lib, REQUIRED_SYMBOL) else None


def openblas_coretype(environ: Mapping[str, str], cpuinfo: str) -> str | None:
    """The OPENBLAS_CORETYPE to load OpenBLAS with, or None to let it choose.

    SkylakeX on an AMD CPU with AVX-512 (older OpenBLAS takes those for a Haswell); never
    when the user chose a core type, and never on CPUs without those instructions.
    """
    if environ.get("OPENBLAS_CORETYPE"):
        return None
    first_cpu = cpuinfo.split("\n\n", 1)[0]
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in first_cpu.splitlines())
    }
    flags = set(fields.get("flags", "").split())
    if fields.get("vendor_id") == "AuthenticAMD" and SKYLAKEX_FLAGS <= flags:
        return "SkylakeX"
    return None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for the body only (nothing happens for None)."""
    if value is None:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def _corename(lib: ctypes.CDLL) -> str | None:
    getter = getattr(lib, "openblas_get_corename", None)
    if getter is None:
        return None
    getter.restype = ctypes.c_char_p
    name = getter()
    return name.decode(errors="replace") if name else None


def load_fast_blas(candidates: Iterable[str] | None = None) -> BlasInfo:
    """Load the first fast BLAS found into the global symbol scope, once per process."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _for_this_platform(candidates)
            if not _loaded.fast and sys.platform.startswith("linux"):
                log.warning(slow_blas_warning(_loaded))
            elif _loaded.path:
                log.info("MLX uses %s", _loaded.describe())
        return _loaded


def slow_blas_warning(info: BlasInfo) -> str:
    """The one-line warning for a process left with the slow reference BLAS."""
    return (
        f"no fast BLAS found for MLX (tried {len(info.tried)} libraries): float32 matrix "
        f"products run ~35x slower; install one with `apt-get install {APT_PACKAGE}` "
        "(Debian/Ubuntu) or your system's OpenBLAS package"
    )


def _for_this_platform(candidates: Iterable[str] | None) -> BlasInfo:
    if sys.platform == "darwin":
        return BlasInfo("Accelerate", None, fast=True)  # MLX links Apple's own there
    if not sys.platform.startswith("linux"):
        return BlasInfo("bundled", None, fast=False)
    if "mlx.core" in sys.modules:
        # Too late to change what it binds to; say so instead of claiming success.
        log.warning("mlx.core was imported before shared.clip; its BLAS stays as it is")
        return BlasInfo("unknown (mlx.core imported first)", None, fast=False)
    return find_blas(candidates if candidates is not None else candidate_paths())


def find_blas(candidates: Iterable[str]) -> BlasInfo:
    """Load the first candidate that exports cblas_sgemm, globally; report what was tried."""
    tried: list[str] = []
    for path in candidates:
        tried.append(path)
        lib = _try_load(path)
        if lib is not None:
            _handles.append(lib)
            return BlasInfo(
                _kind(path), _real_path(path), fast=True, tried=tuple(tried), core=_corename(lib)
            )
    return BlasInfo("bundled reference BLAS", None, fast=False, tried=tuple(tried))


@contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Run the body with the loaded BLAS using `count` threads (no-op if it cannot be told).

    MLX's CPU backend runs element-wise work on one thread per stream; the image tower splits
    a batch over several streams, and then each stream's matrix products should keep to one
    core rather than every stream spawning threads for all of them.
    """
    setter = getter = None
    for lib in _handles:
        setter = getattr(lib, "openblas_set_num_threads", None) or getattr(
            lib, "MKL_Set_Num_Threads", None
        )
        getter = getattr(lib, "openblas_get_num_threads", None) or getattr(
            lib, "MKL_Get_Max_Threads", None
        )
    if setter is None or getter is None:
        yield
        return
    before = getter()
    setter(count)
    try:
        yield
    finally:
        setter(before)


def _real_path(path: str) -> str:
    """The file a soname resolved to, for honest reporting."""
    if path.startswith("/"):
        return str(Path(path).resolve())
    return path
