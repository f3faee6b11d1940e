"""The numpy steps of the CPU path compute what MLX's own operations do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import shared.clip  # noqa: F401  (fast BLAS before mlx.core)
import mlx.core as mx

from shared.clip.cpu import CHUNK, quick_gelu, softmax_rows
from shared.clip.layers import quick_gelu as mlx_quick_gelu


@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 257, 257), (CHUNK + 5,)])
def test_quick_gelu_matches_mlx(shape):
    values = np.random.default_rng(0).normal(scale=4, size=shape).astype(np.float32)
    expected = np.array(mlx_quick_gelu(mx.array(values)))
    np.testing.assert_allclose(quick_gelu(values.copy()), expected, rtol=1e-5, atol=1e-6)


def test_quick_gelu_takes_extremes_without_warnings():
    values = np.array([-1e4, -100.0, -0.0, 0.0, 100.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would reach users' logs
        out = quick_gelu(values.copy())
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 100, 1e4])
    assert np.isfinite(out).all()


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 16, 257, 257), (200, CHUNK + 1)])
def test_softmax_rows_matches_mlx(shape):
    rng = np.random.default_rng(1)
    scores = (rng.normal(size=shape) * 30).astype(np.float32)  # large logits: needs the max shift
    expected = np.array(mx.softmax(mx.array(scores), axis=-1, precise=True))
    got = softmax_rows(scores.copy())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)
