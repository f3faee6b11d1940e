"""How the float32 towers run on MLX's CPU backend, where two things are slow.

- `exp`. MLX's CPU kernels evaluate it one element at a time (~10 ns each on x86-64);
  numpy's is vectorised (~0.3 ns). A ViT-L/14 image needs ~50 million of them, in the
  attention softmax and in quick-GELU, which was ~30 % of its CPU time. Those two steps run
  in numpy here, between lazily built MLX pieces (a copy each way: ~1 ms per layer).
- Threads. MLX runs element-wise work on one thread per stream, and OpenBLAS's own threads do
  badly on the short matrices of a text query (8 tokens: slower with two threads than one).
  So the threading is ours and the BLAS runs one thread per stream: `CpuOps` splits each
  matrix product by output columns over one stream per core, for a single sequence (a text
  query, one image); `ClipModel.encode_images` gives each core its share of a batch instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np
from mlx import nn

from shared.clip.layers import GRAPH, GraphOps

# Elements per numpy pass: small enough that a run stays in the L2 cache between passes.
CHUNK = 1 << 15


def softmax_rows(values: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place, a cache-sized run of rows at a time."""
    width = values.shape[-1]
    rows = values.reshape(-1, width)
    step = max(1, CHUNK // width)
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        block -= block.max(axis=1, keepdims=True)
        np.exp(block, out=block)
        block /= block.sum(axis=1, keepdims=True)
    return values


def quick_gelu(values: np.ndarray) -> np.ndarray:
    """x * sigmoid(1.702 x), in place (as x / (1 + exp(-1.702 x)))."""
    flat = values.reshape(-1)
    scratch = np.empty(min(CHUNK, flat.size), dtype=values.dtype)
    # exp overflows to inf for very negative x, and x / inf = -0 is the right limit.
    with np.errstate(over="ignore"):
        for start in range(0, flat.size, CHUNK):
            run = flat[start : start + CHUNK]
            denominator = scratch[: run.size]
            np.multiply(run, -1.702, out=denominator)
            np.exp(denominator, out=denominator)
            denominator += 1
            np.divide(run, denominator, out=run)
    return values


# Activations worth moving to numpy (they need exp); others stay in the MLX graph.
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"quick_gelu": quick_gelu}


def in_numpy(step: Callable[[np.ndarray], np.ndarray], array: mx.array) -> mx.array:
    """Evaluate `array`, apply the in-place numpy `step` to a copy, and hand it back to MLX."""
    return mx.array(step(np.array(array)))  # a copy: MLX's buffer may be shared


class CpuOps(GraphOps):
    """The layer steps for the CPU: exp-heavy steps in numpy, products split over `streams`."""

    def __init__(self, streams: Sequence[mx.Stream]) -> None:
        self.streams = tuple(streams)

    def linear(self, layer: nn.Linear, x: mx.array) -> mx.array:
        """layer(x), each stream computing its share of the output columns."""
        if len(self.streams) == 1:
            with mx.stream(self.streams[0]):
                return layer(x)
        rows = layer.weight.shape[0]
        bounds = [rows * i // len(self.streams) for i in range(len(self.streams) + 1)]
        parts = []
        for stream, start, stop in zip(self.streams, bounds, bounds[1:]):
            with mx.stream(stream):
                weight = layer.weight[start:stop].T
                if "bias" in layer:
                    parts.append(mx.addmm(layer.bias[start:stop], x, weight))
                else:
                    parts.append(x @ weight)
        with mx.stream(self.streams[0]):
            return mx.concatenate(parts, axis=-1)

    def attention(
        self, q: mx.array, k: mx.array, v: mx.array, scale: float, causal: bool
    ) -> mx.array:
        """Softmax in numpy for the image tower's long sequences.

        A text query's are a few tokens long (little exp to save) and need the causal mask,
        which MLX's fused attention applies; they stay in MLX.
        """
        if causal:
            return GRAPH.attention(q, k, v, scale, causal)
        scores = (q * scale) @ k.swapaxes(-1, -2)
        return in_numpy(softmax_rows, scores) @ v

    def activation(self, name: str, x: mx.array) -> mx.array:
        """In numpy where that is the faster place for it."""
        step = NUMPY_ACTIVATIONS.get(name)
        return in_numpy(step, x) if step is not None else GRAPH.activation(name, x)
