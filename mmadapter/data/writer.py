"""``mmadapter shard MANIFEST OUT_DIR``: validate and decode every manifest line, write the good ones to shards.

Each line is parsed (:mod:`mmadapter.data.manifest`) and every media item decoded with the same decoders
the training pipeline uses, so a shard never holds a sample that training, reading with the same limits,
would have to skip for its content. Good samples go to ``OUT_DIR/shard-000000.tar``, … through
``webdataset.ShardWriter``: ``KEY.json`` (normalised ``messages`` plus ``task``, ``lang`` and free metadata)
and the media bytes unchanged
(``KEY.flac`` or ``KEY.0.flac``, ``KEY.1.wav``, …; graphs ``KEY.graph.npz``). Shards are written in
manifest order whatever the number of workers, with a fixed member mtime, so the same manifest gives
byte-identical shards. ``OUT_DIR/stats.json``, written atomically at the end::

    {"written": n, "skipped": {REASON: n}, "shards": [{"path": "shard-000000.tar", "samples": n, "bytes": n}]}

(``path`` relative to ``OUT_DIR``). A bad line never stops the run: it is counted under its one reason
and logged with its key, reason and detail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
import webdataset as wds

from mmadapter.data.manifest import iter_manifest_lines, media_extension, parse_record, read_media
from mmadapter.data.members import decode_item, item_extension
from mmadapter.data.skips import BadSample, SkipCounter
from mmadapter.limits import DEFAULT_LIMITS, MediaLimits, add_limit_arguments, limits_from_args

__all__ = [
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_SIZE",
    "SHARD_PATTERN",
    "STATS_FILE",
    "add_arguments",
    "prepare_sample",
    "run",
    "write_shards",
]

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-%06d.tar"
STATS_FILE = "stats.json"
DEFAULT_MAX_COUNT = 10_000
DEFAULT_MAX_SIZE = 1_000_000_000
# Lines in flight per worker: keeps workers busy while bounding the media bytes held in memory.
_AHEAD_PER_WORKER = 4

T = TypeVar("T")
R = TypeVar("R")


def prepare_sample(
    line: str | bytes,
    root: Path | str,
    source: str | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> tuple[str, dict[str, bytes]]:
    """Validate one manifest line, decode all its media, and build its shard members.

    Args:
        line: The JSON text of the line.
        root: The manifest's directory.
        source: ``MANIFEST:LINE``, for errors.
        limits: Media size limits.

    Returns:
        The key and ``{extension: bytes}``: ``json`` plus the media members, media bytes as read.

    Raises:
        BadSample: Any reason a line or one of its files can fail with.
    """
    record = parse_record(line, root, source)
    members = {"json": json.dumps({"messages": record.messages, **record.meta}, ensure_ascii=False).encode()}
    for modality, items in read_media(record).items():
        for index, (path, data) in enumerate(zip(record.media[modality], items, strict=True)):
            name = str(path)
            try:
                decoded = decode_item(modality, data, name, limits, sample_rate=None)  # as stored: no resampling
            except BadSample as e:  # it names the file; add the manifest line
                e.key = record.key
                e.source = name if source is None else f"{source}, {name}"
                raise
            if modality == "image":
                decoded.close()
            ext = media_extension(path, modality)
            assert ext is not None, "parse_record admits only known extensions"
            members[item_extension(ext, index, len(items))] = data
    return record.key, members


def _prepare_or_bad(
    task: tuple[str, bytes], *, root: Path, limits: MediaLimits
) -> tuple[str, str, dict[str, bytes]] | BadSample:
    """:func:`prepare_sample` for a process pool: a bad line comes back as its error instead of raising."""
    source, line = task
    try:
        key, members = prepare_sample(line, root, source, limits)
    except BadSample as e:
        return e
    return key, source, members


def _init_worker() -> None:
    torch.set_num_threads(1)  # one decode per process; the pool provides the parallelism


def _ordered_map(fn: Callable[[T], R], tasks: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, tasks)`` in input order, in ``workers`` processes, with a bounded number in flight."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    # spawn, not fork: a forked child of a process that already ran torch's OpenMP pool can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        pending: deque[Future[R]] = deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= _AHEAD_PER_WORKER * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _ShardSink:
    """``wds.ShardWriter`` opened on the first sample, each shard written to a temp file and renamed when full."""

    def __init__(self, out_dir: Path, max_count: int, max_size: int) -> None:
        self.out_dir = out_dir
        self.max_count = max_count
        self.max_size = max_size
        self.shards: list[dict[str, Any]] = []
        self._writer: wds.ShardWriter | None = None
        self._files: dict[str, Any] = {}
        self._in_shard = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._writer is None:
            pattern = str(self.out_dir).replace("%", "%%") + os.sep + SHARD_PATTERN
            self._writer = wds.ShardWriter(
                pattern,
                maxcount=self.max_count,
                maxsize=float(self.max_size),
                post=self._finished,
                opener=self._open,
                verbose=0,
                encoder=False,
                mtime=0.0,
            )
        self._writer.write({"__key__": key, **members})
        self._in_shard += 1

    def _open(self, fname: str) -> Any:
        self._files[fname] = open(fname + ".tmp", "wb")  # noqa: SIM115 -- closed in _finished
        return self._files[fname]

    def _finished(self, fname: str) -> None:
        self._files.pop(fname).close()
        os.replace(fname + ".tmp", fname)
        path = Path(fname)
        self.shards.append({"path": path.name, "samples": self._in_shard, "bytes": path.stat().st_size})
        self._in_shard = 0

    def close(self) -> None:
        """Finish the last shard."""
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        """Drop the shard being written (it may end mid-sample); finished shards stay."""
        if self._writer is not None and self._writer.tarstream is not None:
            # Close tarfile's stream first, or its finaliser later flushes into the closed temp file.
            with contextlib.suppress(Exception):
                self._writer.tarstream.close()
        for fname, f in self._files.items():
            f.close()
            Path(fname + ".tmp").unlink(missing_ok=True)
        self._files.clear()


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output {out_dir} is a file, not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(out_dir.glob(SHARD_PATTERN.split("%")[0] + "*.tar*")) + sorted(out_dir.glob(STATS_FILE))
    if existing and not overwrite:
        raise ValueError(
            f"{out_dir} already holds shards or stats ({existing[0].name}, ...); pick an empty directory "
            "or overwrite them (--overwrite)"
        )
    for path in existing:
        path.unlink()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def write_shards(
    manifest: Path | str,
    out_dir: Path | str,
    *,
    max_count: int = DEFAULT_MAX_COUNT,
    max_size: int = DEFAULT_MAX_SIZE,
    workers: int = 1,
    limits: MediaLimits = DEFAULT_LIMITS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a manifest's valid samples to webdataset shards, in manifest order.

    Args:
        manifest: The JSONL manifest; media paths are relative to its directory.
        out_dir: Where ``shard-NNNNNN.tar`` and ``stats.json`` go (created if needed).
        max_count: Samples per shard at most.
        max_size: A shard is closed once its member bytes reach this many (so it may exceed it by one sample).
        workers: Processes that validate and decode lines; the output does not depend on it.
        limits: Media size limits (``too_large_image``, ``too_long``, ``too_large_graph`` above them);
            by default the same as training reads with by default.
        overwrite: Delete shards and stats already in ``out_dir`` instead of refusing to run.

    Returns:
        The contents of ``stats.json``.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ValueError: ``max_count``, ``max_size`` or ``workers`` below 1, or ``out_dir`` already holds shards
            and ``overwrite`` is not set.
    """
    manifest, out_dir = Path(manifest), Path(out_dir)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} not found")
    for name, value in {"max_count": max_count, "max_size": max_size, "workers": workers}.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    _prepare_out_dir(out_dir, overwrite)

    prepare = partial(_prepare_or_bad, root=manifest.parent, limits=limits)
    counter = SkipCounter()
    first_seen: dict[str, str] = {}
    sink = _ShardSink(out_dir, max_count, max_size)
    try:
        for result in _ordered_map(prepare, iter_manifest_lines(manifest), workers):
            if isinstance(result, BadSample):
                counter.record(result)
                continue
            key, source, members = result
            if key in first_seen:
                counter.record(BadSample("bad_json", key, f"duplicate key, first on {first_seen[key]}", source))
                continue
            first_seen[key] = source
            sink.write(key, members)
            counter.record_ok()
    except BaseException:
        sink.abort()
        raise
    sink.close()
    stats = {"written": counter.ok, "skipped": counter.by_reason(), "shards": sink.shards}
    _write_json_atomic(out_dir / STATS_FILE, stats)
    log.info("%s: %s; %d shard(s) in %s", manifest, counter.summary(), len(sink.shards), out_dir)
    return stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmadapter shard``; pair with :func:`run`."""
    parser.add_argument("manifest", type=Path, help="JSONL manifest, one sample a line (README: Data)")
    parser.add_argument("out_dir", type=Path, help="directory for shard-NNNNNN.tar and stats.json")
    parser.add_argument(
        "--max-count", type=int, default=DEFAULT_MAX_COUNT, help="samples per shard at most (default: %(default)s)"
    )
    parser.add_argument(
        "--max-size", type=int, default=DEFAULT_MAX_SIZE, help="bytes per shard, about (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="decoding processes; the shards do not depend on it (default: %(default)s)",
    )
    add_limit_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in OUT_DIR")


def run(args: argparse.Namespace) -> int:
    """Run ``mmadapter shard``: 0 when at least one sample was written, 1 when none was."""
    stats = write_shards(
        args.manifest,
        args.out_dir,
        max_count=args.max_count,
        max_size=args.max_size,
        workers=args.workers,
        limits=limits_from_args(args),
        overwrite=args.overwrite,
    )
    skipped = ", ".join(f"{reason} {n}" for reason, n in stats["skipped"].items()) or "none"
    print(f"wrote {stats['written']} samples to {len(stats['shards'])} shard(s) in {args.out_dir}; skipped: {skipped}")
    if not stats["written"]:
        print(f"mmadapter shard: no valid sample in {args.manifest}", file=sys.stderr)
        return 1
    return 0
