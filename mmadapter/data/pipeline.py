"""The training data stream: webdataset shards in, packed :class:`MultimodalBatch` es out.

The stream is a visible list of small stages (:func:`sample_stages`), each a function of an iterator:

    shard URLs (epoch order or resampled, split by rank and worker, seeded)
    → tar members (webdataset's ``tarfile_to_samples``; truncated tars counted)
    → the set's first ``max_samples`` only, when it has a budget (:mod:`mmadapter.data.budget`)
    → seeded sample shuffle
    → our decode (:func:`mmadapter.data.members.decode_sample`; never webdataset's decoders)
    → prepare (the model's encoder transforms, placeholder expansion, chat-template labels)
    → samples longer than ``data.max_tokens`` skipped as ``too_long``
→ weighted mix of shard sets → packing into ``data.max_tokens`` → batches.

Everything random is seeded from ``(seed, epoch, rank, worker)``, so the stream is deterministic and a
resumed run regenerates it and skips the batches it had consumed. Bad samples are skipped through the one
:class:`SkipCounter` handler of each worker; each batch carries the skips counted since the previous one
(``batch.skipped``) so the trainer can sum them across workers and ranks, and a one-pass (validation)
stream of a worker that gave no batch but skipped samples ends with an empty batch that carries them
(:meth:`MultimodalBatch.empty`). A resampled stream in which :data:`GIVE_UP_AFTER` samples and shard reads
in a row give nothing (skipped samples, empty or unreadable shards) stops with :class:`NoUsableSamples`
rather than spinning forever without a batch.
"""

from __future__ import annotations

import itertools
import random
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from mmadapter.batch import MultimodalBatch, Sample
from mmadapter.config import DataConfig, ShardSet
from mmadapter.data.budget import SampleBudget, first_samples
from mmadapter.data.members import DecodedSample, decode_sample
from mmadapter.data.packing import batch_stream, oversized
from mmadapter.data.skips import BadSample, NoUsableSamples, SkipCounter
from mmadapter.data.tar_cuts import REMOTE_PREFIXES, at_the_cut, marking_the_cut_end, truncated_tail
from mmadapter.limits import DEFAULT_LIMITS, MediaLimits

__all__ = ["ShardStream", "StreamPosition", "expand_shards", "mix", "sample_stages", "shard_order"]

Prepare = Callable[[DecodedSample], Sample]
GIVE_UP_AFTER = 1000
"""Skipped samples and barren shard reads in a row, none passing, after which a resampled stream stops
(per loader worker)."""


@dataclass(frozen=True)
class StreamPosition:
    """Who reads the stream: the seed, the epoch and this process's place among ranks and loader workers."""

    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def rng(self, *salt: object) -> random.Random:
        """A generator seeded from this position and ``salt`` (stable across processes and runs)."""
        text = repr((self.seed, self.epoch, self.rank, self.worker, *salt)).encode()
        return random.Random(zlib.crc32(text))


def expand_shards(spec: str | Sequence[str], base: Path | None = None) -> list[str]:
    """Shard URLs of a spec: brace patterns (``shard-{000000..000009}.tar``), lists, local paths (made
    absolute against ``base``), ``pipe:`` commands and remote URLs (kept as they are).

    Raises:
        FileNotFoundError: a local shard does not exist.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for s in specs:
        for url in braceexpand.braceexpand(s):
            if url.startswith(REMOTE_PREFIXES):
                urls.append(url)
                continue
            path = Path(url).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            if not path.is_file():
                raise FileNotFoundError(f"shard not found: {path} (from data spec {s!r}){_directory_hint(path)}")
            urls.append(str(path))
    if not urls:
        raise ValueError(f"no shards in {spec!r}")
    return urls


def _directory_hint(path: Path) -> str:
    if not path.is_dir():
        return ""
    tars = sorted(p.name for p in path.glob("*.tar"))
    held = f" holding {len(tars)} .tar file(s) ({tars[0]}, ...)" if tars else ""
    return f"; it is a directory{held}: name the shards, e.g. {path}/shard-{{000000..000009}}.tar"


def shard_order(urls: Sequence[str], pos: StreamPosition) -> list[str]:
    """Epoch mode: this rank's and worker's share of a seeded shuffle of all shards (each shard is read by
    exactly one rank and worker per epoch)."""
    order = list(urls)
    random.Random(zlib.crc32(repr((pos.seed, pos.epoch, "shards")).encode())).shuffle(order)
    return order[pos.rank :: pos.world_size][pos.worker :: pos.num_workers]


def resampled_order(urls: Sequence[str], rng: random.Random, weights: Sequence[int] | None = None) -> Iterator[str]:
    """Resampled mode: an endless stream of shards drawn with replacement (in proportion to ``weights``, the
    samples each holds, when given)."""
    while True:
        yield rng.choice(urls) if weights is None else rng.choices(urls, weights=weights)[0]


def mix(streams: Sequence[Iterator[Any]], weights: Sequence[float], rng: random.Random) -> Iterator[Any]:
    """Draw from ``streams`` with probability proportional to ``weights`` until all are exhausted."""
    live = list(range(len(streams)))
    while live:
        i = rng.choices(live, weights=[weights[j] for j in live])[0]
        try:
            yield next(streams[i])
        except StopIteration:
            live.remove(i)


def sample_stages(
    urls: Iterable[str],
    prepare: Prepare,
    counter: SkipCounter,
    shuffle_buffer: int,
    rng: random.Random,
    budget: SampleBudget | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
    max_tokens: int | None = None,
) -> Iterator[Sample]:
    """The per-shard-set stages, from shard URLs to prepared samples (only the ``budget``'s, when given).

    Media above ``limits`` (the recipe's ``data.limits``) are skipped and counted; so is a sample longer
    than ``max_tokens``, here rather than in the packer so that it never counts as passed.
    """
    pipeline = wds.DataPipeline(
        lambda: ({"url": url} for url in urls),
        _ShardReads(counter, budget).samples,
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=rng) if shuffle_buffer > 1 else _same,
        _guarded(_decoder(limits), counter, "decode"),
        _guarded(prepare if max_tokens is None else _within(prepare, max_tokens), counter, "prepare", last=True),
    )
    return iter(pipeline)


def _decoder(limits: MediaLimits) -> Callable[[dict[str, Any]], DecodedSample]:
    def decode(raw: dict[str, Any]) -> DecodedSample:
        try:
            return decode_sample(raw, limits=limits)
        except BadSample as e:
            cut = at_the_cut(raw, e)
            if cut is e:
                raise
            raise cut from e

    return decode


def _within(prepare: Prepare, max_tokens: int) -> Prepare:
    def prepare_within(decoded: DecodedSample) -> Sample:
        sample = prepare(decoded)
        error = oversized(sample, max_tokens)
        if error is not None:
            raise error
        return sample

    return prepare_within


class ShardStream(IterableDataset):
    """An iterable dataset of batches over one or more weighted shard sets.

    Args:
        sets: The shard sets (``data.train`` or ``data.val``).
        prepare: Decoded sample → tokenized :class:`Sample` (:meth:`MultimodalLM.prepare_decoded`).
        data: The recipe's data section (``max_tokens``, ``layout``, ``shuffle_buffer``).
        pad_id: The tokenizer's pad id (padded layout).
        position: Seed, epoch and rank; the loader worker is filled in inside each worker.
        resampled: Draw shards with replacement forever (training) instead of one pass per epoch.
        base: Directory that relative shard paths are relative to.

    Attributes:
        passes: Of a one-pass stream, the pass about to start, as the trainer counts them
            (:class:`~mmadapter.train.data.Passes`); after the first, skips (the same samples again) are logged
            at DEBUG only.
    """

    def __init__(
        self,
        sets: Sequence[ShardSet],
        prepare: Prepare,
        data: DataConfig,
        pad_id: int,
        position: StreamPosition,
        resampled: bool = True,
        base: Path | None = None,
    ) -> None:
        super().__init__()
        if not sets:
            raise ValueError("no shard sets given (data.train / data.val is empty)")
        self.urls: list[list[str]] = []
        self.budgets: list[SampleBudget | None] = []
        self.specs = [s.shards for s in sets]
        for s in sets:
            urls = expand_shards(s.shards, base)
            budget = None if s.max_samples is None else first_samples(urls, s.max_samples)
            if budget is not None and not budget.keys:
                raise ValueError(f"shard set {s.shards!r}: max_samples={s.max_samples}, but its shards hold no samples")
            self.urls.append(urls if budget is None else budget.urls)  # a budget reads only the shards it needs
            self.budgets.append(budget)
        self.weights = [s.weight for s in sets]
        self.prepare = prepare
        self.data = data
        self.pad_id = pad_id
        self.position = position
        self.resampled = resampled
        self.passes = 0

    def __iter__(self) -> Iterator[MultimodalBatch]:
        info = get_worker_info()
        pos = self.position
        if info is not None:
            pos = StreamPosition(pos.seed, pos.epoch, pos.rank, pos.world_size, info.id, info.num_workers)
        counter = SkipCounter(give_up_after=GIVE_UP_AFTER if self.resampled else None, warn=self.passes <= 1)
        streams, data = [], self.data
        for i, (urls, budget) in enumerate(zip(self.urls, self.budgets, strict=True)):
            if self.resampled:
                order = resampled_order(urls, pos.rng("resample", i), None if budget is None else budget.shard_weights)
            else:
                order = iter(shard_order(urls, pos))
            rng = pos.rng("shuffle", i)
            stages = sample_stages(
                order, self.prepare, counter, data.shuffle_buffer, rng, budget, data.limits, data.max_tokens
            )
            streams.append(_naming_set(stages, self.specs[i]))
        samples = mix(streams, self.weights, pos.rng("mix"))
        reported = SkipCounter()

        def with_skips(batch: MultimodalBatch) -> MultimodalBatch:
            delta = _minus(counter, reported)
            reported.merge(delta)
            batch.skipped = delta.as_dict()
            return batch

        # One batch behind, so that the skips counted while the stream ends still reach the last batch.
        pending = None
        for batch in batch_stream(samples, self.data.max_tokens, self.data.layout, self.pad_id, counter.record):
            if pending is not None:
                yield with_skips(pending)
            pending = batch
        if pending is not None:
            yield with_skips(pending)
        elif not self.resampled and counter.skipped:  # one pass, nothing passed: still report what it skipped
            yield with_skips(MultimodalBatch.empty())


def _naming_set(samples: Iterator[Sample], spec: str | Sequence[str]) -> Iterator[Sample]:
    """``samples``, with the shard set named in a :class:`NoUsableSamples` that reading it ended in."""
    try:
        yield from samples
    except NoUsableSamples as e:
        e.args = (f"shard set {spec!r}: {e.args[0]}", *e.args[1:])
        raise


def _guarded(fn: Callable[[Any], Any], counter: SkipCounter, stage: str, last: bool = False) -> Callable:
    """A stage applying ``fn`` to each item; bad data is counted and skipped, bugs propagate."""

    def stage_fn(items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            key = item.get("__key__") if isinstance(item, Mapping) else None
            key = key or (item.get("key") if isinstance(item, Mapping) else None)
            try:
                out = fn(item)
            except (BadSample, ValueError, FileNotFoundError) as e:
                counter.record(e, key=key)
                continue
            if last:
                counter.record_ok()
            yield out

    stage_fn.__name__ = stage
    return stage_fn


class _ShardReads:
    """Shard URLs → raw samples, one read at a time: only the budget's first samples of each shard (each read of a
    resampled one); a truncated tar counted once (per loader worker) and its last sample marked (an incomplete
    one is skipped as ``truncated_tar`` too, :mod:`mmadapter.data.tar_cuts`), a shard that cannot be read at all
    (a failing ``pipe:`` command, an I/O error) on every read, as ``missing_file``; and a read that gives
    nothing and counts nothing lengthens the counter's give-up run (an empty shard drawn again and again)."""

    def __init__(self, counter: SkipCounter, budget: SampleBudget | None) -> None:
        self.counter = counter
        self.budget = budget
        self.cut: set[str] = set()  # shards already counted as truncated_tar
        self.url = ""  # the shard being read, for the errors webdataset hands to the handler

    def samples(self, sources: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for source in sources:
            self.url = url = source["url"]
            skipped = self.counter.skipped
            cut = None if url in self.cut else truncated_tail(url)
            if cut is not None:
                self.cut.add(url)
                self.counter.record(cut)
            members = wds.tarfile_to_samples(handler=self.handler)(iter([source]))
            read = members if self.budget is None else itertools.islice(members, self.budget.counts[url])
            gave = False
            try:  # the members before a cut are still good; the last sample may have lost some to it
                for sample in marking_the_cut_end(read, lambda url=url: self._cut_at_end(url)):
                    gave = True
                    yield sample
            finally:
                members.close()  # a budget stops reading mid-shard: close the tar now, not when collected
                if not url.startswith(REMOTE_PREFIXES) and source.get("stream") is not None:
                    source["stream"].close()
            if not gave and self.counter.skipped == skipped:
                self.counter.record_barren(url)

    def _cut_at_end(self, url: str) -> bool:
        """The read of ``url`` that just ended stopped at a cut (not where a budget stops it before the end)."""
        return url in self.cut and (self.budget is None or url in self.budget.whole)

    def handler(self, exc: BaseException) -> bool:
        """Count what a read raised (webdataset reports a tar error twice: member iterator, then expander)."""
        if isinstance(exc, (tarfile.TarError, EOFError)):
            if self.url not in self.cut:
                self.cut.add(self.url)
                self.counter.record(exc, source=self.url)
        elif isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            detail = f"cannot read the shard: {type(exc).__name__}: {exc.args[0] if exc.args else exc}"
            self.counter.record(BadSample("missing_file", None, detail, self.url))
        else:
            self.counter.record(exc, source=self.url)
        return True


def _same(items: Iterator[Any]) -> Iterator[Any]:
    return items


def _minus(total: SkipCounter, done: SkipCounter) -> SkipCounter:
    out = SkipCounter(ok=total.ok - done.ok)
    out.counts.update({r: n - done.counts[r] for r, n in total.counts.items() if n - done.counts[r]})
    out.examples = {r: e for r, e in total.examples.items() if r not in done.examples}
    return out
