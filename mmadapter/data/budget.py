"""A shard set's sample budget (``max_samples``): only its first N samples, read from the tar headers.

A recipe that fine-tunes on "at most 500 utterances of the new language" should hold to it whatever the shards
contain. :func:`first_samples` lists the members of a set's shards in the order the set names them (within a
shard, in stored order) and keeps the first ``n`` samples, grouping members into samples exactly as webdataset
does (by ``base_plus_ext``, one sample per run of a key). The stream then reads only the shards that hold them
and stops each read of a shard after its share, so a budget costs a scan of tar headers, not a decode.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

# The members webdataset's tar reader skips entirely (the default ``skip_meta`` of ``tar_file_iterator``).
_META = re.compile(r"__[^/]*__($|/)")

__all__ = ["SampleBudget", "first_samples", "sample_key"]


def sample_key(member: str) -> str | None:
    """The webdataset key of a tar member (``"dir/utt-01.audio.flac"`` → ``"dir/utt-01"``), by webdataset's own
    rule; ``None`` for a member webdataset skips: one with no extension, or metadata (``__meta__/info.json``,
    ``__index__``)."""
    if (member.startswith(meta_prefix) and member.endswith(meta_suffix) and "/" not in member) or _META.match(member):
        return None
    return base_plus_ext(member)[0]


@dataclass(frozen=True)
class SampleBudget:
    """The first samples of a shard set: the first ``counts[url]`` samples of each shard it needs, in the
    set's order; their keys as ``(url, key)`` in ``keys``; ``whole``: the shards it takes to their end (or
    cut), all of them but the last one it reads, where it stops before the end."""

    keys: frozenset[tuple[str, str]]
    counts: dict[str, int]
    whole: frozenset[str] = frozenset()

    @property
    def urls(self) -> list[str]:
        """The shards that hold the budget's samples, in the set's order."""
        return list(self.counts)

    @property
    def shard_weights(self) -> list[int]:
        """The budget's samples in each of :attr:`urls` (resampled shards are drawn in proportion)."""
        return list(self.counts.values())


def first_samples(urls: Sequence[str], n: int) -> SampleBudget:
    """The first ``n`` samples of the shards ``urls`` (local tar files), or all of them when there are fewer.
    A bad sample among them still takes its place in the budget (the stream skips and counts it as ever); so
    does each run of a key that recurs later in its tar, as webdataset streams each run as a sample.

    Raises:
        ValueError: ``n`` is not positive, or a URL is not a local file (a ``pipe:`` or remote shard cannot be
            listed before it is streamed).
        tarfile.TarError: a shard is not a readable tar (``mmadapter shard`` writes readable ones); a shard cut
            short is listed up to the cut.
    """
    if n < 1:
        raise ValueError(f"max_samples must be positive, got {n}")
    keys: set[tuple[str, str]] = set()
    counts: dict[str, int] = {}
    taken = 0
    for url in urls:
        if not Path(url).is_file():
            raise ValueError(f"max_samples needs local shard files to count samples in, got {url!r}")
        last = None
        with tarfile.open(url, "r:") as tar:
            try:
                for member in tar:
                    if not member.isfile():
                        continue
                    key = sample_key(member.name)
                    if key is None or key == last:
                        continue
                    if taken == n:
                        return SampleBudget(frozenset(keys), counts, frozenset(counts) - {url})
                    keys.add((url, key))
                    counts[url] = counts.get(url, 0) + 1
                    taken += 1
                    last = key
            except (tarfile.ReadError, EOFError):
                pass  # a truncated shard: the stream counts it; its members before the cut still count here
    return SampleBudget(frozenset(keys), counts, frozenset(counts))
