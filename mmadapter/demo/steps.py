"""What each demo step returns, how it reports the time it took, how it runs ``mmadapter`` commands, and the
training loop step 1 shares."""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "PretrainResult",
    "cpu_threads",
    "epochs",
    "fit",
    "mmadapter_command",
    "pretraining",
    "side_by_side",
    "timed",
]


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


def mmadapter_command(*argv: str | Path) -> None:
    """Run one ``mmadapter`` command in this process, printing it first (so that it can be rerun by hand);
    raise if it fails."""
    from mmadapter.cli import main

    args = [str(a) for a in argv]
    print("$ mmadapter " + " ".join(args), flush=True)
    code = main(args)
    if code != 0:
        raise RuntimeError(f"mmadapter {args[0]} failed (exit code {code})")


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


@contextmanager
def pretraining(label: str, path: Path, threads: int | None, seed: int) -> Iterator[PretrainResult]:
    """One step-1 training: yields its :class:`PretrainResult` for ``path`` to fill, run under :func:`timed`
    (``label``) and :func:`cpu_threads` with ``torch.manual_seed(seed)``; sets its ``seconds`` when done."""
    result = PretrainResult(path)
    timings: dict[str, float] = {}
    with timed(label, timings), cpu_threads(threads):
        torch.manual_seed(seed)
        yield result
    result.seconds = timings[label]


def side_by_side(jobs: Mapping[str, tuple[Callable[..., Any], tuple[Any, ...]]], log_dir: Path) -> dict[str, Any]:
    """Run ``fn(*args)`` of each job at once, each in a fresh process (spawned: nothing of this process's thread
    pools is inherited), and return their results by job name.

    What a job prints goes to ``log_dir/<name>.log`` and is printed here, whole, as the job ends, so that the
    jobs' lines never interleave. An exception in a job is raised here once every job has ended.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        futures = {pool.submit(_logged, log_dir / f"{name}.log", fn, args): name for name, (fn, args) in jobs.items()}
        results: dict[str, Any] = {}
        for future in as_completed(futures):
            name = futures[future]
            print((log_dir / f"{name}.log").read_text(), end="", flush=True)
            results[name] = future.result()
    return results


def _logged(log: Path, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    with log.open("w", buffering=1) as f, redirect_stdout(f), redirect_stderr(f):
        return fn(*args)


def epochs(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of indices into ``n`` items: each epoch shuffled anew, its incomplete last batch dropped."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def fit(
    params: Iterable[nn.Parameter],
    losses: Iterator[Tensor],
    steps: int,
    lr: float,
    warmup_steps: int,
    weight_decay: float,
    floor: float = 0.05,
    log_every: int = 0,
    what: str = "loss",
) -> list[float]:
    """Take one optimizer step on each of the first ``steps`` losses that ``losses`` yields; return them.

    AdamW, the learning rate warmed up linearly over ``warmup_steps`` and then decayed linearly to
    ``floor · lr``, the gradient norm clipped at 1. ``losses`` is drawn lazily, so each loss is computed with
    the weights of the step before. Every ``log_every`` steps (0: never) the mean ``what`` is printed.
    """
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warmup_steps) * max(floor, 1 - i / steps)
    )
    out: list[float] = []
    for loss in itertools.islice(losses, steps):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        out.append(loss.item())
        if log_every and len(out) % log_every == 0:
            print(f"[demo]   step {len(out)}/{steps}: {what} {np.mean(out[-log_every:]):.3f}", flush=True)
    return out
