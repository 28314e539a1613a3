"""What the ViT image encoders share: patch tokens from one transformer block, a fixed token count, and the
tower's own preprocessing.

The output of block ``layer`` (Python indexing over the blocks: -1 the last, -2 the penultimate as in LLaVA)
is taken as is, without the final norm or pooling head; blocks after it, the final norm and the head are
removed from the tower, so every parameter kept takes part in the output. The class token is dropped unless
``cls_token`` (register tokens always are).

Shape letters: n images, H/W pixels, p patch tokens, k prefix tokens (class, registers), s output tokens
(p, or p + 1 with the class token), d ``embed_dim``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from mmadapter.encoders.base import Encoder, EncoderSpec

__all__ = ["VisionTowerEncoder", "VisionTowerSpec", "block_index"]


class VisionTowerSpec(EncoderSpec):
    """Options shared by the ViT image encoders."""

    layer: int = -2
    """Block whose output gives the tokens, indexed like a Python list (-2: the penultimate, as in LLaVA)."""
    cls_token: bool = False
    """Keep the class token in front of the patch tokens (towers without one reject this)."""


def block_index(layer: int, depth: int, name: str) -> int:
    """Non-negative index of block ``layer`` in a tower of ``depth`` blocks.

    Raises:
        ValueError: ``layer`` is outside ``[-depth, depth)``.
    """
    if not -depth <= layer < depth:
        raise ValueError(f"{name}: layer={layer} is out of range for a tower of {depth} blocks ([-{depth}, {depth}))")
    return layer % depth


class VisionTowerEncoder(Encoder):
    """A ViT image tower giving ``(n, s, d)`` tokens.

    Subclasses run the tower up to the chosen block in :meth:`blocks_output` and pass what they know of it to
    this constructor.

    Args:
        embed_dim: Width ``d`` of the tower.
        num_patches: Patch tokens ``p`` per image.
        prefix_tokens: Tokens ``k`` before the patches in the block output (class token first, then registers).
        has_class_token: Whether the first prefix token is a class token.
        cls_token: Keep the class token.
        preprocess: The tower's own eval preprocessing, RGB PIL image to ``(3, H, W)`` pixels.
        name: Registry key, named in errors.
    """

    modality = "image"

    def __init__(
        self,
        *,
        embed_dim: int,
        num_patches: int,
        prefix_tokens: int,
        has_class_token: bool,
        cls_token: bool,
        preprocess: Callable[[Image.Image], Tensor],
        name: str,
    ) -> None:
        super().__init__()
        if cls_token and not has_class_token:
            raise ValueError(f"{name}: cls_token=True, but this tower has no class token")
        self.embed_dim = embed_dim
        self.num_patches = num_patches
        self.prefix_tokens = prefix_tokens
        self.cls_token = cls_token
        self.preprocess = preprocess

    @abstractmethod
    def blocks_output(self, pixels: Tensor) -> Tensor:
        """Output ``(n, k + p, d)`` of the chosen block for pixels ``(n, 3, H, W)``."""

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Tokens ``(n, s, d)`` of pixels ``(n, 3, H, W)``; ``lengths`` is ignored and returned as ``s``."""
        hidden = self.blocks_output(inputs.to(next(self.parameters()).dtype))  # (n, k + p, d)
        tokens = hidden[:, self.prefix_tokens :]
        if self.cls_token:
            tokens = torch.cat([hidden[:, :1], tokens], dim=1)
        return tokens, torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)

    def output_length(self, input_length: int) -> int:
        """The fixed token count ``s`` (patches, plus one with the class token), whatever the input."""
        return self.num_patches + int(self.cls_token)

    def transform(self, raw: Any) -> Tensor:
        """Pixels ``(3, H, W)`` of a PIL image (converted to RGB first) through the tower's preprocessing."""
        if not isinstance(raw, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(raw).__name__}")
        return self.preprocess(raw.convert("RGB"))
