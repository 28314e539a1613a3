"""What each demo step returns, and how it reports the time it took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["PretrainResult", "cpu_threads", "timed"]


@dataclass
class PretrainResult:
    """A pretrained component: its checkpoint directory, quality metrics, loss curve and time taken.

    Attributes:
        path: The checkpoint directory, loadable by the component's registry family through ``name_or_path``.
        metrics: Held-out quality (``wer_<lang>``, ``accuracy``, …) and training figures.
        losses: Training loss per step.
        seconds: Wall time of the whole step.
    """

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def timed(label: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Print ``label`` and, when done, the seconds it took (also stored in ``timings[label]``)."""
    print(f"[demo] {label} ...", flush=True)
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    if timings is not None:
        timings[label] = seconds
    print(f"[demo] {label}: {seconds:.1f} s", flush=True)


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` (unchanged for ``None``), restoring the previous count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
