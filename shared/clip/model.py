"""CLIP's text and vision towers with their projections, as in transformers' CLIPModel."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np
from mlx import nn

from shared.clip.blas import blas_threads
from shared.clip.config import ClipConfig, TextConfig, VisionConfig
from shared.clip.cpu import CpuOps
from shared.clip.layers import GRAPH, Encoder, GraphOps

# Text batches are padded up to one of these lengths, so that mx.compile traces a handful
# of shapes instead of one per query length (padding after the end token changes nothing).
LENGTH_BUCKETS = (8, 16, 24, 32, 48, 64)

# Old checkpoints whose text config says eos_token_id == 2 pool at the largest id instead
# (transformers keeps that rule for them; the end token is the largest id in CLIP's vocab).
LEGACY_EOS_TOKEN_ID = 2


class TextEmbeddings(nn.Module):
    """Token plus learned position embeddings."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def __call__(self, ids: mx.array) -> mx.array:
        """Embed a (batch, length) array of token ids."""
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class TextTransformer(nn.Module):
    """The causal text encoder, pooled at the end-of-text token."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(config)
        self.encoder = encoder_for(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, ids: mx.array, pool_at: mx.array, ops: GraphOps = GRAPH) -> mx.array:
        """Return the normalised hidden state at `pool_at[i]` for each sequence i."""
        hidden = self.encoder(self.embeddings(ids), causal=True, ops=ops)
        pooled = hidden[mx.arange(ids.shape[0]), pool_at]
        return self.final_layer_norm(
            pooled
        )  # per position, so norming only the pooled rows is the same


class PatchEmbedding(nn.Module):
    """A stride-p, kernel-p convolution without bias, done as one matrix product over patches."""

    def __init__(self, channels: int, dims: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        # MLX's conv layout (out, kh, kw, in); HF's torch weight is transposed on load.
        self.weight = mx.zeros((dims, patch, patch, channels))

    def __call__(self, pixels: mx.array) -> mx.array:
        """(batch, H, W, C) pixels -> (batch, patches, dims)."""
        batch, height, width, channels = pixels.shape
        p = self.patch
        grid_h, grid_w = height // p, width // p
        patches = pixels.reshape(batch, grid_h, p, grid_w, p, channels).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(batch, grid_h * grid_w, p * p * channels)
        return patches @ self.weight.reshape(self.weight.shape[0], -1).T


class VisionEmbeddings(nn.Module):
    """Class token, patch embeddings and learned position embeddings."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.class_embedding = mx.zeros((config.hidden_size,))
        self.patch_embedding = PatchEmbedding(
            config.num_channels, config.hidden_size, config.patch_size
        )
        positions = (config.image_size // config.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(positions, config.hidden_size)

    def __call__(self, pixels: mx.array) -> mx.array:
        """(batch, H, W, C) -> (batch, 1 + patches, dims)."""
        if pixels.shape[1] != self.image_size or pixels.shape[2] != self.image_size:
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} pixels, got "
                f"{pixels.shape[1]}x{pixels.shape[2]}"
            )
        patches = self.patch_embedding(pixels)
        cls = mx.broadcast_to(self.class_embedding, (patches.shape[0], 1, patches.shape[2]))
        return mx.concatenate([cls.astype(patches.dtype), patches], axis=1) + (
            self.position_embedding.weight
        )


class VisionTransformer(nn.Module):
    """The ViT image encoder, pooled at the class token."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(
            config.hidden_size, eps=config.layer_norm_eps
        )  # HF's spelling
        self.encoder = encoder_for(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, pixels: mx.array, ops: GraphOps = GRAPH) -> mx.array:
        """Return the normalised class-token state for each image."""
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixels)), ops=ops)
        return self.post_layernorm(hidden[:, 0])


def encoder_for(config: TextConfig | VisionConfig) -> Encoder:
    """The transformer stack a tower's config describes."""
    return Encoder(
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.num_hidden_layers,
        config.hidden_act,
        config.layer_norm_eps,
    )


class ClipModel(nn.Module):
    """Both towers (or the text tower alone) and their projections into the shared space."""

    def __init__(
        self,
        config: ClipConfig,
        text_only: bool = False,
        compiled: bool = True,
        cpu_path: bool = False,
    ) -> None:
        """`cpu_path`: run as `shared.clip.cpu` describes (float32 on MLX's CPU backend);
        otherwise each pass is one MLX graph, compiled unless `compiled` is False."""
        super().__init__()
        self.config = config
        self.text_only = text_only
        self.cpu_path = cpu_path
        self._cores = _usable_cores() if cpu_path else 1
        # MLX streams belong to the thread that made them: each calling thread (a web server's
        # request threads, the image workers) gets its own set, made on first use.
        self._per_thread = threading.local()
        self._workers: ThreadPoolExecutor | None = None
        self._workers_lock = threading.Lock()
        # Fusing the element-wise work (activations, norms, residuals) into one graph.
        self._text_fn = mx.compile(self.text_features) if compiled else self.text_features
        self._image_fn = mx.compile(self.image_features) if compiled else self.image_features
        self.text_model = TextTransformer(config.text)
        self.text_projection = nn.Linear(config.text.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = mx.array(0.0)
        if not text_only:
            self.vision_model = VisionTransformer(config.vision)
            self.visual_projection = nn.Linear(
                config.vision.hidden_size, config.projection_dim, bias=False
            )

    @property
    def dtype(self) -> mx.Dtype:
        """The dtype the weights are held in."""
        return self.text_projection.weight.dtype

    def text_features(self, ids: mx.array, pool_at: mx.array, ops: GraphOps = GRAPH) -> mx.array:
        """Projected (not yet normalised) text embeddings."""
        return self.text_projection(self.text_model(ids, pool_at, ops))

    def image_features(self, pixels: mx.array, ops: GraphOps = GRAPH) -> mx.array:
        """Projected (not yet normalised) image embeddings from NHWC pixels."""
        if self.text_only:
            raise RuntimeError("this CLIP model was loaded without its vision tower")
        return self.visual_projection(self.vision_model(pixels.astype(self.dtype), ops))

    def encode_text(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embed tokenised texts (each with its start and end tokens) as unit float32 vectors."""
        limit = self.config.text.max_position_embeddings
        ids, pool_at = pack_tokens(token_ids, self.config.text.eos_token_id, limit)
        ids, pool_at = mx.array(ids), mx.array(pool_at)
        if not self.cpu_path:
            return _unit_rows(self._text_fn(ids, pool_at))
        streams = self._thread_streams()
        with blas_threads(1), mx.stream(streams[0]):  # one BLAS thread per stream
            features = self.text_features(ids, pool_at, CpuOps(streams))
            mx.eval(features)
        return _unit_rows(features)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a (batch, H, W, 3) float32 array of preprocessed images as unit vectors."""
        if not self.cpu_path:
            return _unit_rows(self._image_fn(mx.array(pixels)))
        with blas_threads(1):  # one BLAS thread per stream
            if len(pixels) == 1 or self._cores == 1:
                return _unit_rows(self._cpu_images(pixels, self._thread_streams()))
            # Images are independent: each core takes a share of the batch, all steps.
            shares = np.array_split(pixels, min(self._cores, len(pixels)))
            done = self._image_workers().map(self._cpu_images_on_worker, shares)
            return _unit_rows(np.concatenate(list(done)))

    def _cpu_images(self, pixels: np.ndarray, streams: list[mx.Stream]) -> np.ndarray:
        with mx.stream(streams[0]):
            features = self.image_features(mx.array(pixels), CpuOps(streams))
            mx.eval(features)
        return np.array(features)

    def _cpu_images_on_worker(self, pixels: np.ndarray) -> np.ndarray:
        return self._cpu_images(pixels, self._thread_streams(1))

    def _image_workers(self) -> ThreadPoolExecutor:
        with self._workers_lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(self._cores, thread_name_prefix="clip-cpu")
            return self._workers

    def _thread_streams(self, count: int | None = None) -> list[mx.Stream]:
        """`count` (default: one per core) of the calling thread's CPU streams, made on first use."""
        streams = self._per_thread.__dict__.setdefault("streams", [])
        count = count or self._cores
        while len(streams) < count:
            streams.append(mx.new_stream(mx.cpu))  # each runs on a thread of its own
        return streams[:count]


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells), at most 8."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        count = os.cpu_count() or 1
    return max(1, min(count, 8))


def pool_positions(ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    """Where transformers pools each row: the end token's first position (or the max id, legacy)."""
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        return ids.argmax(axis=1)
    return (ids == eos_token_id).argmax(axis=1)


def pack_tokens(
    token_ids: list[list[int]], eos_token_id: int, limit: int = 77
) -> tuple[np.ndarray, np.ndarray]:
    """Pad a batch to its longest member's bucket (not to 77); find each row's pooling position.

    The mask is causal and pooling happens at the end token, so positions after it never
    influence the result: running only as far as the longest sequence gives the same vectors.
    """
    if not token_ids:
        raise ValueError("no texts to embed")
    longest = max(len(ids) for ids in token_ids)
    if longest > limit:
        raise ValueError(f"a text has {longest} tokens; this model takes at most {limit}")
    length = min([bucket for bucket in LENGTH_BUCKETS if bucket >= longest] + [limit])
    pad = token_ids[0][-1]  # the end token, which CLIP's tokenizers also pad with
    batch = np.full((len(token_ids), length), pad, dtype=np.int32)
    for row, ids in enumerate(token_ids):
        batch[row, : len(ids)] = ids
    return batch, pool_positions(batch, eos_token_id).astype(np.int32)


def _unit_rows(features: mx.array | np.ndarray) -> np.ndarray:
    if isinstance(features, mx.array):
        features = np.array(features.astype(mx.float32))  # numpy has no bfloat16
    return features / np.linalg.norm(features, axis=-1, keepdims=True)
