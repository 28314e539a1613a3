"""Regrouping the tokens of packed or padded rows by the sample they belong to.

Adapters that attend to per-sample keys (each sample's modality tokens, or prompts conditioned on them) run
on a ``(S, L, …)`` layout, one row per sample, then put the results back in place; a packed row never lets a
token see another sample's keys.

Shape letters: b rows, t positions, S samples, L longest group, N tokens with an owner.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SampleGroups"]


class SampleGroups:
    """Index maps between ``(b, t, …)`` positions and ``(S, L, …)`` per-sample groups.

    Args:
        owner: ``(b, t)`` sample of each position, -1 for positions that belong to none (padding).
        num_samples: S; samples without any position get an empty group.
    """

    def __init__(self, owner: Tensor, num_samples: int) -> None:
        self.lead = tuple(owner.shape)
        flat = owner.flatten()
        src = (flat >= 0).nonzero().squeeze(1)  # (N,)
        own = flat[src]
        order = torch.argsort(own, stable=True)  # keep positions in order within each sample
        self.src, own = src[order], own[order]
        counts = torch.bincount(own, minlength=num_samples)
        self.length = int(counts.max()) if own.numel() else 0
        rank = torch.arange(own.numel(), device=own.device) - (counts.cumsum(0) - counts)[own]
        self.dest = own * self.length + rank
        self.num_samples = num_samples
        valid = torch.zeros(num_samples * self.length, dtype=torch.bool, device=owner.device)
        self.valid = valid.index_fill(0, self.dest, True).view(num_samples, self.length)
        """``(S, L)`` True where a group position holds a token."""

    def gather(self, x: Tensor) -> Tensor:
        """``(b, t, …) → (S, L, …)``, zeros where a group is shorter than L."""
        rest = x.shape[len(self.lead) :]
        out = x.new_zeros((self.num_samples * self.length, *rest))
        out = out.index_copy(0, self.dest, x.flatten(0, len(self.lead) - 1).index_select(0, self.src))
        return out.view(self.num_samples, self.length, *rest)

    def scatter(self, y: Tensor) -> Tensor:
        """``(S, L, …) → (b, t, …)``, zeros at positions without an owner."""
        rest = y.shape[2:]
        n = 1
        for size in self.lead:
            n *= size
        out = y.new_zeros((n, *rest)).index_copy(0, self.src, y.flatten(0, 1).index_select(0, self.dest))
        return out.view(*self.lead, *rest)
