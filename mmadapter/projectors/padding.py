"""Right padding, as every projector sees it: a batch holds items of different lengths padded on the right, and
padded frames must never reach an item's valid outputs.

Shape letters: n items, s frames, d features.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ceil_div", "clean_batch", "frame_mask", "pad_frames", "zero_padding"]

IntOrTensor = TypeVar("IntOrTensor", int, Tensor)


def ceil_div(a: IntOrTensor, b: int) -> IntOrTensor:
    """``ceil(a / b)`` for non-negative ``a`` and positive ``b``, exact for Python ints and integer tensors alike."""
    return (a + b - 1) // b


def clean_batch(x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``lengths`` against ``x``, put it on ``x``'s device, drop the frames beyond the longest item and
    zero the padding of the others: every projector's first step.

    Trimming makes every projector's output width ``output_length(max(lengths))``, whatever extra padding the
    caller left in ``x``; zeroing means that whatever the padding held (even NaN) cannot reach valid outputs, and
    that windows or groups reaching past an item's end read zeros.

    Args:
        x: ``(n, s, d)`` right-padded frames.
        lengths: ``(n,)`` valid frames per item, each in ``[1, s]``.

    Returns:
        ``(n, max(lengths), d)`` frames, zero past each item's length, and ``lengths`` on ``x``'s device.

    Raises:
        ValueError: ``x`` is not 3-D, the batch is empty, ``lengths`` does not match it, or a length is outside
            ``[1, s]``.
    """
    if x.ndim != 3:
        raise ValueError(f"projector input must be (items, frames, features), got shape {tuple(x.shape)}")
    if lengths.shape != (x.shape[0],):
        raise ValueError(
            f"lengths must have shape ({x.shape[0]},) to match input {tuple(x.shape)}, got {tuple(lengths.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("projector input is an empty batch")
    lengths = lengths.to(x.device)
    lo, hi = (int(v) for v in torch.aminmax(lengths))
    if lo < 1 or hi > x.shape[1]:
        raise ValueError(f"lengths must lie in [1, {x.shape[1]}] (the padded frame count), got {lengths.tolist()}")
    return zero_padding(x[:, :hi], lengths), lengths


def frame_mask(lengths: Tensor, s: int) -> Tensor:
    """``(n, s)`` boolean mask, True at each item's valid frames (``t < lengths[i]``)."""
    return torch.arange(s, device=lengths.device) < lengths[:, None]


def zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """``x`` ``(n, s, d)`` with every position at or past ``lengths[i]`` set to exactly zero.

    ``masked_fill`` rather than a product with the mask, so that NaN or inf in padding cannot leak through.
    """
    return x.masked_fill(~frame_mask(lengths, x.shape[1])[..., None], 0)


def pad_frames(x: Tensor, s: int) -> Tensor:
    """Right-pad ``x`` ``(n, s0, d)`` with zero frames to ``(n, s, d)``, ``s >= s0``."""
    return F.pad(x, (0, 0, 0, s - x.shape[1]))
