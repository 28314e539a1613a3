"""Collective helpers that degrade to the single process when torch.distributed is not initialised."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

__all__ = ["gather_from_ranks"]


def gather_from_ranks(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a collective call under torch.distributed; ``[obj]`` without it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone
