"""The random generators a training step may draw from, saved per rank in resume checkpoints.

Every rank's states are gathered into the checkpoint (only rank 0 writes it) and each rank gets its own back,
so that after a resume rank ``r`` draws what it would have drawn uninterrupted (dropout differs by rank as
soon as ranks see batches of different shapes). The states are kept in the types a ``weights_only``
checkpoint load accepts: tensors, lists, numbers and strings.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from mmadapter.train.ranks import gather_from_ranks

__all__ = ["gather_rng_states", "restore_rng_states", "rng_states"]

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """This process's generator states: torch (CPU), the current CUDA device once in use, Python, numpy."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`rng_states`, in rank order (a collective call under torch.distributed)."""
    everyone = gather_from_ranks(rng_states())
    return [{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for s in everyone]


def restore_rng_states(states: list[dict[str, Any]], rank: int) -> None:
    """Restore the states :func:`gather_rng_states` gathered: this rank's own, or rank 0's (with a warning)
    when the run resumes with another number of ranks."""
    if rank >= len(states):
        log.warning("the checkpoint holds random states of %d rank(s); rank %d takes rank 0's", len(states), rank)
    state = states[rank] if rank < len(states) else states[0]
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
