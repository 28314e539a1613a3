"""A learnable gate ``tanh(g)``, initialised to 0 so that what it scales starts switched off (torchtune's
``TanhGate``; Flamingo's and LLaMA-Adapter's zero-init gates)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TanhGate"]


class TanhGate(nn.Module):
    """Scales its input by ``tanh(scale)``: one scalar, or one value per slice along ``dim``.

    Args:
        size: 1 for a scalar gate, or the length of the axis ``dim`` of the input (e.g. heads).
        dim: The axis that a vector gate runs along, counted from the end (e.g. -2 for ``(…, heads, d)``).
    """

    def __init__(self, size: int = 1, dim: int = -1) -> None:
        super().__init__()
        if dim >= 0:
            raise ValueError(f"dim={dim}: count the gated axis from the end (negative), so any batch shape works")
        self.dim = dim
        self.scale = nn.Parameter(torch.zeros(size))

    def forward(self, x: Tensor) -> Tensor:
        gate = self.scale.tanh().to(x.dtype)
        if gate.numel() > 1:
            gate = gate.reshape(gate.shape + (1,) * (-self.dim - 1))
        return x * gate

    def extra_repr(self) -> str:
        return f"size={self.scale.numel()}, dim={self.dim}"
