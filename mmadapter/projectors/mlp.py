"""``mlp`` projector: Linear → activation → Linear per frame, LLaVA-1.5's ``mlp2x_gelu``
(https://arxiv.org/abs/2310.03744). :func:`two_layer_mlp` is the block that ``stack`` reuses.

Shape letters: n items, s frames, i ``in_dim``, h ``hidden``, o ``out_dim``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt
from torch import nn

from mmadapter.projectors.base import PROJECTORS
from mmadapter.projectors.framewise import FramewiseProjector
from mmadapter.registry import ComponentSpec

Activation = Literal["relu", "gelu", "silu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}

__all__ = ["ACTIVATIONS", "Activation", "MlpProjector", "MlpSpec", "mlp", "two_layer_mlp"]


def two_layer_mlp(in_dim: int, hidden: int, out_dim: int, activation: Activation) -> nn.Sequential:
    """``Linear(in_dim, hidden) → activation → Linear(hidden, out_dim)``; parameters ``0.*`` and ``2.*`` as in
    LLaVA's ``mm_projector``."""
    return nn.Sequential(nn.Linear(in_dim, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, out_dim))


class MlpProjector(FramewiseProjector):
    """``(n, s, i) -> (n, s, o)`` through :func:`two_layer_mlp` on each frame.

    Args:
        in_dim: Encoder width i.
        out_dim: LLM width o.
        hidden: Width h of the middle layer.
        activation: Non-linearity between the layers.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, activation: Activation = "gelu") -> None:
        super().__init__(two_layer_mlp(in_dim, hidden, out_dim, activation))


class MlpSpec(ComponentSpec):
    """Options of ``mlp``: ``hidden`` defaults to the LLM width (LLaVA-1.5); ``activation`` to GELU."""

    hidden: PositiveInt | None = None
    activation: Activation = "gelu"


@PROJECTORS.register(spec=MlpSpec)
def mlp(spec: MlpSpec, in_dim: int, out_dim: int) -> MlpProjector:
    """Build an :class:`MlpProjector` from ``spec``."""
    return MlpProjector(in_dim, out_dim, spec.hidden or out_dim, spec.activation)
