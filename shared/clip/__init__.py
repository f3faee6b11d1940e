"""CLIP (Hugging Face checkpoints) implemented in MLX.

Importing this package first points MLX at a fast BLAS on Linux (see `blas.py`); that
has to happen before any module imports `mlx.core`, which is why it is done here.
"""

from shared.clip.blas import load_fast_blas

load_fast_blas()
