"""Projected tokens at the scale of the LLM's own input embeddings (``model.token_norm: embedding_rms``).

A projector trained from scratch is free to emit vectors of any length, and they grow: in the offline demo the
audio tokens ended 30–200 times longer than the text embeddings around them. The LLM's layer norms hide the
length from the layer that reads a position, but not from the residual stream: every later layer adds its
output to that huge vector, so what the layers write at a modality position (which neighbour it is, what
it attends to) is drowned, and a frozen LLM reads such tokens unreliably. This parameter-free RMSNorm gives
every projected token the mean RMS of the frozen input-embedding table instead, as text tokens have.

Shape letters: n items, s tokens, d LLM width, V vocabulary.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["EmbeddingRmsNorm", "token_norm"]


class EmbeddingRmsNorm:
    """``x / rms(x) · mean_v rms(E_v)`` per token, with E the LLM's input-embedding table ``(V, d)``.

    The target is computed once and again only when the table changes (it is frozen unless a stage trains the
    LLM), so the norm costs one reduction over the table per change, not per step.

    Args:
        embeddings: The LLM's input embeddings (held by reference; not a submodule, so it adds no parameters).
        eps: Added to the mean square of each token.
    """

    def __init__(self, embeddings: nn.Embedding, eps: float = 1e-12) -> None:
        self._embeddings = [embeddings]  # a list: keep nn.Module from registering it as a child
        self.eps = eps
        self._target: Tensor | None = None
        self._seen: tuple[int, int] | None = None

    def target(self) -> Tensor:
        """The mean RMS of the table's rows (a 0-d tensor on the table's device, float32)."""
        weight = self._embeddings[0].weight
        key = (weight.data_ptr(), weight._version)
        if self._target is None or self._seen != key:
            with torch.no_grad():
                self._target = weight.float().pow(2).mean(-1).sqrt().mean()
            self._seen = key
        return self._target

    def __call__(self, tokens: Tensor) -> Tensor:
        """Rescale ``(n, s, d)`` tokens (any leading shape); a zero token stays zero."""
        x = tokens.float()
        return (x * self.target() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(tokens.dtype)


def token_norm(kind: Literal["none", "embedding_rms"], embeddings: nn.Embedding) -> EmbeddingRmsNorm | None:
    """What ``model.token_norm`` asks for over the LLM's input ``embeddings``: ``None`` for ``none``."""
    return EmbeddingRmsNorm(embeddings) if kind == "embedding_rms" else None
