"""The pre-norm transformer blocks both CLIP towers are made of."""

from __future__ import annotations

import math
from collections.abc import Callable

import mlx.core as mx
from mlx import nn


def quick_gelu(x: mx.array) -> mx.array:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    # Written with exp rather than mx.sigmoid: on MLX's CPU backend sigmoid costs ~1.4x an
    # exp, and once compiled the rest fuses into the same pass. exp overflowing to inf for
    # very negative x still gives the right limit, x / inf = 0.
    return x / (1 + mx.exp(-1.702 * x))


def gelu_tanh(x: mx.array) -> mx.array:
    """GELU with the tanh approximation (transformers' gelu_new / gelu_pytorch_tanh)."""
    return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


# Keyed by transformers' `hidden_act` names, so a config picks the same function there and here.
ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    "quick_gelu": quick_gelu,
    "gelu": nn.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


def activation(name: str) -> Callable[[mx.array], mx.array]:
    """Look up an activation by its transformers name, refusing unknown ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unsupported hidden_act {name!r}; known: {', '.join(ACTIVATIONS)}"
        ) from None


class GraphOps:
    """The steps of a layer that have more than one implementation, done in one MLX graph.

    This is the default: lazy, compilable, and what the GPU runs. On a CPU, `shared.clip.cpu`
    swaps in numpy for the exp-heavy steps and splits matrix products over threads.
    """

    def linear(self, layer: nn.Linear, x: mx.array) -> mx.array:
        """A projection."""
        return layer(x)

    def attention(
        self, q: mx.array, k: mx.array, v: mx.array, scale: float, causal: bool
    ) -> mx.array:
        """Softmax attention over (batch, heads, length, head_dims) arrays."""
        return mx.fast.scaled_dot_product_attention(
            q, k, v, scale=scale, mask="causal" if causal else None
        )

    def activation(self, name: str, x: mx.array) -> mx.array:
        """The feed-forward activation `name` (a transformers hidden_act)."""
        return ACTIVATIONS[name](x)


GRAPH = GraphOps()


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (HF key names)."""

    def __init__(self, dims: int, heads: int) -> None:
        super().__init__()
        if dims % heads:
            raise ValueError(f"hidden size {dims} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dims // heads) ** -0.5
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(dims, dims)
        self.v_proj = nn.Linear(dims, dims)
        self.out_proj = nn.Linear(dims, dims)

    def __call__(self, x: mx.array, causal: bool, ops: GraphOps = GRAPH) -> mx.array:
        """Attend over the sequence; `causal` hides later positions (text tower)."""
        batch, length, dims = x.shape

        def split(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = (split(ops.linear(p, x)) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = ops.attention(q, k, v, self.scale, causal)
        return ops.linear(self.out_proj, out.transpose(0, 2, 1, 3).reshape(batch, length, dims))


class MLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, dims: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden)
        self.fc2 = nn.Linear(hidden, dims)
        activation(act)  # refuse an unknown name when the model is built, not on first use
        self.act = act

    def __call__(self, x: mx.array, ops: GraphOps = GRAPH) -> mx.array:
        """Apply the feed-forward block."""
        return ops.linear(self.fc2, ops.activation(self.act, ops.linear(self.fc1, x)))


class EncoderLayer(nn.Module):
    """One pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, dims: int, hidden: int, heads: int, act: str, eps: float) -> None:
        super().__init__()
        self.self_attn = Attention(dims, heads)
        self.layer_norm1 = nn.LayerNorm(dims, eps=eps)
        self.mlp = MLP(dims, hidden, act)
        self.layer_norm2 = nn.LayerNorm(dims, eps=eps)

    def __call__(self, x: mx.array, causal: bool, ops: GraphOps = GRAPH) -> mx.array:
        """Run the block."""
        x = x + self.self_attn(self.layer_norm1(x), causal, ops)
        return x + self.mlp(self.layer_norm2(x), ops)


class Encoder(nn.Module):
    """A stack of encoder layers (named `layers` as in HF, so keys line up)."""

    def __init__(self, dims: int, hidden: int, heads: int, depth: int, act: str, eps: float):
        super().__init__()
        self.layers = [EncoderLayer(dims, hidden, heads, act, eps) for _ in range(depth)]

    def __call__(self, x: mx.array, causal: bool = False, ops: GraphOps = GRAPH) -> mx.array:
        """Run every layer in turn."""
        for layer in self.layers:
            x = layer(x, causal, ops)
        return x
