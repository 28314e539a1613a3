"""Shards cut short (a copy that stopped, a full disk): finding the cut, and naming the sample it falls in.

A cut tar is counted once per read as ``truncated_tar`` for the samples lost past the cut. The members read
before it are still good, except that the last sample may have lost members to it: webdataset groups the
members it did read into a sample that then fails for a reason that misleads (``placeholder_mismatch`` for an
audio member that was never read). :func:`marking_the_cut_end` marks that last sample, and
:func:`at_the_cut` gives its failure the reason it has, ``truncated_tar``, keeping the first reason in the
detail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mmadapter.data.skips import BadSample

__all__ = ["CUT_END", "REMOTE_PREFIXES", "at_the_cut", "marking_the_cut_end", "truncated_tail"]

REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://")
CUT_END = "__cut_end__"
"""The raw-sample field set on the last sample read from a cut tar (skipped by the decoder, as every
``__*__`` field is)."""


def truncated_tail(url: str) -> BadSample | None:
    """``truncated_tar`` for a local shard whose tail is cut, else ``None``: tarfile takes a cut inside a
    member header for a clean end, so the tail is checked first (remote shards cannot be)."""
    if url.startswith(REMOTE_PREFIXES) or not _tail_is_cut(Path(url)):
        return None
    return BadSample("truncated_tar", None, "the tar does not end with its end blocks", url)


def _tail_is_cut(path: Path) -> bool:
    """A complete tar is a whole number of 512-byte blocks ending in two zero blocks."""
    size = path.stat().st_size
    if size < 1024 or size % 512:
        return True
    with path.open("rb") as f:
        f.seek(size - 1024)
        return any(f.read(1024))


def marking_the_cut_end(samples: Iterable[dict[str, Any]], is_cut: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """All ``samples`` of one shard read, one behind, the last marked with :data:`CUT_END` when ``is_cut()``
    says, once the tar has been read to its end, that it was cut."""
    held = None
    for sample in samples:
        if held is not None:
            yield held
        held = sample
    if held is not None:
        if is_cut():
            held[CUT_END] = True
        yield held


def at_the_cut(raw: dict[str, Any], error: BadSample) -> BadSample:
    """``error`` of a raw sample, as ``truncated_tar`` when the sample is the last one of a cut tar."""
    if not raw.get(CUT_END) or error.reason == "truncated_tar":
        return error
    detail = f"the last sample before the cut, members missing ({error.reason}: {error.detail})"
    return BadSample("truncated_tar", error.key, detail, error.source)
