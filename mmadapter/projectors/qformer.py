"""``qformer`` projector: learned queries that cross-attend to the encoder frames (BLIP-2's Q-Former,
https://arxiv.org/abs/2301.12597), optionally once per window of w frames (SALMONN's window-level Q-Former,
https://arxiv.org/abs/2310.13289).

Without a window every item becomes ``num_queries`` tokens, however long it is. With a window, frames
``[j·w, (j+1)·w)`` form window j and each window becomes ``num_queries`` tokens, in order:
``output_length(n) = ceil(n / w) · num_queries``. Windows that lie wholly in an item's padding are never computed.

Shape letters: n items, s frames, i ``in_dim``, h ``hidden``, o ``out_dim``, q ``num_queries``, w frames per
window, g = ceil(s / w) windows per item, m windows holding at least one real frame.
"""

from __future__ import annotations

import torch
from pydantic import PositiveInt, model_validator
from torch import Tensor, nn

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.mlp import two_layer_mlp
from mmadapter.projectors.padding import ceil_div, clean_batch, frame_mask, pad_frames
from mmadapter.registry import ComponentSpec

__all__ = ["QFormerLayer", "QFormerProjector", "QFormerSpec", "qformer"]


class QFormerLayer(nn.Module):
    """One pre-norm block: self-attention over the queries, cross-attention from the queries to the frames, FFN
    (4·h wide, GELU), each added to the residual stream.

    Args:
        hidden: Width h of queries and frames.
        heads: Attention heads; must divide ``hidden``.
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden)
        self.self_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.ffn = two_layer_mlp(hidden, 4 * hidden, hidden, "gelu")

    def forward(self, queries: Tensor, frames: Tensor, padding: Tensor) -> Tensor:
        """Update ``(m, q, h)`` queries from ``(m, w, h)`` frames; ``padding`` ``(m, w)`` is True at frames to
        ignore and must leave at least one frame per row."""
        h = self.self_norm(queries)
        queries = queries + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.cross_norm(queries)
        queries = queries + self.cross_attn(h, frames, frames, key_padding_mask=padding, need_weights=False)[0]
        return queries + self.ffn(self.ffn_norm(queries))


class QFormerProjector(Projector):
    """Frames → ``LayerNorm(i) → Linear(i, h)``; ``num_queries`` learned queries pass through ``layers``
    :class:`QFormerLayer` blocks attending to the frames of one item (or one window); then
    ``Linear(h, o) → LayerNorm(o)``.

    Args:
        in_dim: Encoder width i.
        out_dim: LLM width o.
        num_queries: Learned queries q, the tokens per item (or per window).
        layers: Number of :class:`QFormerLayer` blocks.
        heads: Attention heads; must divide ``hidden``.
        hidden: Width h of the queries.
        window: Frames per window w (stride w); None attends to the whole item at once.
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_queries: int, layers: int, heads: int, hidden: int, window: int | None
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"qformer hidden ({hidden}) must be a multiple of heads ({heads})")
        self.num_queries = num_queries
        self.window = window
        self.queries = nn.Parameter(0.02 * torch.randn(num_queries, hidden))
        self.frame_norm = nn.LayerNorm(in_dim)
        self.frame_proj = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(QFormerLayer(hidden, heads) for _ in range(layers))
        self.proj = nn.Linear(hidden, out_dim)
        self.out_norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` frames to ``(n, output_length(max(lengths)), o)`` tokens, zero past each item's
        ``output_length(lengths[i])``."""
        x, lengths = clean_batch(x, lengths)  # NaN/inf in padding must not reach the attention
        n, s, i = x.shape
        w = self.window or s
        g = ceil_div(s, w)
        frames = pad_frames(x, g * w).reshape(n * g, w, i)
        real = frame_mask(lengths, g * w).reshape(n * g, w)
        keep = real[:, 0]  # right padding: a window holds a real frame iff its first frame is real
        frames, real = frames[keep], real[keep]  # (m, w, i), (m, w)
        memory = self.frame_proj(self.frame_norm(frames))  # (m, w, h)
        queries = self.queries.expand(frames.shape[0], -1, -1)  # (m, q, h)
        for layer in self.layers:
            queries = layer(queries, memory, ~real)
        tokens = self.out_norm(self.proj(queries))  # (m, q, o)
        out = tokens.new_zeros(n * g, self.num_queries, tokens.shape[-1]).index_put((keep,), tokens)
        # windows of an item are a prefix of its g slots, so its tokens are already right-padded
        out_lengths = ceil_div(lengths, w) * self.num_queries
        return out.reshape(n, g * self.num_queries, -1), out_lengths

    def output_length(self, n: int) -> int:
        return (ceil_div(n, self.window) if self.window else 1) * self.num_queries


class QFormerSpec(ComponentSpec):
    """Options of ``qformer``: ``num_queries`` (BLIP-2's 32), ``layers`` (SALMONN's 2), ``heads``, ``hidden``
    (default: ``min(in_dim, 768)`` rounded up to a multiple of ``heads``), ``window`` frames per window (SALMONN
    uses 17 Whisper frames ≈ 0.33 s with one query; default None: one window per item)."""

    num_queries: PositiveInt = 32
    layers: PositiveInt = 2
    heads: PositiveInt = 8
    hidden: PositiveInt | None = None
    window: PositiveInt | None = None

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> QFormerSpec:
        if self.hidden is not None and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


@PROJECTORS.register(spec=QFormerSpec)
def qformer(spec: QFormerSpec, in_dim: int, out_dim: int) -> QFormerProjector:
    """Build a :class:`QFormerProjector` from ``spec``."""
    hidden = spec.hidden or spec.heads * ceil_div(min(in_dim, 768), spec.heads)
    return QFormerProjector(in_dim, out_dim, spec.num_queries, spec.layers, spec.heads, hidden, spec.window)
