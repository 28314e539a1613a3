"""Bad samples: the closed set of skip reasons, the one exception that carries them, and their counter.

Every stage that can fail on bad data (shard writer, decode, tokenization, packing) raises
:class:`BadSample` or lets a known foreign exception through; :func:`as_bad_sample` is the one place that
maps a failure to exactly one reason, and :class:`SkipCounter` counts skips by reason and enforces a
recipe's ``max_bad_fraction`` (DESIGN.md §5, §8).

Samples above the recipe's own limits (:data:`LIMIT_REASONS`: ``data.limits``, ``data.max_tokens``) are
skipped and counted like bad ones, but they are the recipe's choice rather than broken data, so
``max_bad_fraction`` judges only the other samples; a stream where nothing passes at all stops either way
(:class:`NoUsableSamples`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "LIMIT_REASONS",
    "SKIP_REASONS",
    "BadFractionExceeded",
    "BadSample",
    "NoUsableSamples",
    "SkipCounter",
    "SkipReason",
    "as_bad_sample",
]

log = logging.getLogger(__name__)

SkipReason = Literal[
    "missing_file",
    "corrupt_audio",
    "empty_audio",
    "corrupt_image",
    "too_large_image",
    "bad_graph",
    "graph_no_nodes",
    "graph_edge_out_of_range",
    "too_large_graph",
    "bad_json",
    "placeholder_mismatch",
    "too_long",
    "truncated_tar",
    "unsafe_member",
]
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)
LOGGED_PER_REASON = 10
"""Skips of one reason logged one by one at WARNING; after that a WARNING at every power of ten and DEBUG."""
LIMIT_REASONS: tuple[SkipReason, ...] = ("too_long", "too_large_image", "too_large_graph")
"""Skips for being above a limit the recipe (or ``mmadapter shard``) set, not for broken data."""
_BUFFER_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class BadSample(ValueError):
    """A sample that must be skipped, with the one reason it is skipped for.

    Args:
        reason: One of :data:`SKIP_REASONS`.
        key: The sample key, or ``None`` where the failing code does not know it (a decoder); the stage
            that knows it fills it in with :meth:`with_key`.
        detail: What exactly was wrong, for the log.
        source: Where the sample came from: a file, a manifest line, a shard member or URL.
    """

    def __init__(self, reason: SkipReason, key: str | None, detail: str, source: str | None = None) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; allowed: {', '.join(SKIP_REASONS)}")
        detail = _BUFFER_REPR.sub("", detail)  # decoders read from memory and name the buffer object
        super().__init__(reason, key, detail, source)
        self.reason: SkipReason = reason
        self.key = key
        self.detail = detail
        self.source = source

    def __str__(self) -> str:
        where = f"sample {self.key!r}" if self.key is not None else "sample"
        if self.source is not None:
            where += f" ({self.source})"
        return f"{where}: {self.reason}: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.key, self.detail, self.source))

    def with_key(self, key: str | None, source: str | None = None) -> BadSample:
        """This error with its key (and source) filled in where they were unknown; returns ``self``."""
        if self.key is None:
            self.key = key
        if self.source is None:
            self.source = source
        return self


class BadFractionExceeded(ValueError):
    """More samples were bad than a recipe's ``max_bad_fraction`` allows."""


class NoUsableSamples(ValueError):
    """A stream skipped so many samples in a row that it would never yield a batch."""


def as_bad_sample(exc: BaseException, key: str | None = None, source: str | None = None) -> BadSample | None:
    """The one mapping from a failure anywhere in the data path to a skip reason.

    Args:
        exc: The exception a stage raised for one sample (or one shard).
        key: The sample key, where the caller knows it better than the exception.
        source: The file, member or URL, likewise.

    Returns:
        ``exc`` itself when it is a :class:`BadSample` (key and source filled in where missing), a new
        :class:`BadSample` for the foreign exceptions that mean bad data (a missing file, a truncated tar,
        broken JSON, a placeholder mismatch found while tokenizing), and ``None`` for anything else: that
        is a bug, not bad data, and must propagate.
    """
    if isinstance(exc, BadSample):
        return exc.with_key(key, source)
    reason: SkipReason | None = None
    if isinstance(exc, FileNotFoundError):
        reason = "missing_file"
    elif isinstance(exc, tarfile.TarError | EOFError):
        reason = "truncated_tar"
    elif isinstance(exc, json.JSONDecodeError):
        reason = "bad_json"
    else:
        # Only an already imported tokenizer module can have raised its mismatch; importing it here would
        # pull transformers into every data worker.
        chat = sys.modules.get("mmadapter.llm.chat")
        if chat is not None and isinstance(exc, chat.PlaceholderMismatch):
            reason = "placeholder_mismatch"
    if reason is None:
        return None
    bad = BadSample(reason, key, f"{type(exc).__name__}: {exc}", source)
    bad.__cause__ = exc
    return bad


@dataclass
class SkipCounter:
    """Counts samples seen and skipped, by reason; mergeable across workers and ranks.

    Every sample must reach exactly one of :meth:`record_ok` (it made it through) or :meth:`record` (it was
    skipped), so that ``seen == ok + skipped``.

    Attributes:
        ok: Samples that passed.
        counts: Skipped samples per reason.
        examples: The first skip message of each reason, for the error that stops a run.
        give_up_after: Raise :class:`NoUsableSamples` once this many skips (and barren shard reads,
            :meth:`record_barren`) follow one another with no sample passing in between (a resampled stream of
            nothing but bad shards would otherwise spin forever); ``None`` never gives up. Local to this
            counter: neither merged nor serialised.
        in_a_row: Skips and barren reads since the last sample that passed (or since the start).
        warn: Log skips as warnings (see :data:`LOGGED_PER_REASON`); ``False`` logs each at DEBUG only (a
            validation pass after the first, which skips the same samples again). Local, like ``give_up_after``.
    """

    ok: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    give_up_after: int | None = field(default=None, compare=False)
    in_a_row: int = field(default=0, compare=False, repr=False)
    warn: bool = field(default=True, compare=False, repr=False)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    @property
    def over_limits(self) -> int:
        """Skips for being above a limit (:data:`LIMIT_REASONS`)."""
        return sum(self.counts[reason] for reason in LIMIT_REASONS)

    @property
    def bad(self) -> int:
        """Skips for broken data: all but :attr:`over_limits`."""
        return self.skipped - self.over_limits

    @property
    def seen(self) -> int:
        return self.ok + self.skipped

    def record_ok(self, n: int = 1) -> None:
        """Count ``n`` samples that passed."""
        self.ok += n
        if n:
            self.in_a_row = 0

    def record(self, exc: BaseException, key: str | None = None, source: str | None = None) -> BadSample:
        """Count and log one skipped sample.

        Args:
            exc: What the sample failed with.
            key: The sample key, where ``exc`` does not carry it.
            source: Its file, member or URL, likewise.

        Returns:
            The :class:`BadSample` it was counted as.

        Raises:
            BaseException: ``exc`` itself when it does not mean bad data (see :func:`as_bad_sample`).
            NoUsableSamples: This was skip number :attr:`give_up_after` in a row.
        """
        if isinstance(exc, NoUsableSamples):
            exc.args = exc.args[:1]  # back through webdataset's tar expander, which appends its stream and URL
            raise exc
        bad = as_bad_sample(exc, key, source)
        if bad is None:
            raise exc
        self.counts[bad.reason] += 1
        self.examples.setdefault(bad.reason, str(bad))
        self._log(bad)
        self._one_more_in_a_row(str(bad))
        return bad

    def record_barren(self, source: str) -> None:
        """A shard read that gave no sample at all (an empty tar, or an unreadable one already counted): no
        skip is counted, but it lengthens the run that :attr:`give_up_after` ends.

        Raises:
            NoUsableSamples: The run reached :attr:`give_up_after`.
        """
        self._one_more_in_a_row(f"{source} gave no sample")

    def _one_more_in_a_row(self, example: str) -> None:
        self.in_a_row += 1
        if self.give_up_after is not None and self.in_a_row >= self.give_up_after:
            raise NoUsableSamples(
                f"nothing passed in the last {self.in_a_row} samples and shard reads ({self.summary()}); "
                f"e.g. {example}; check the shards, data.limits and data.max_tokens"
            )

    def _log(self, bad: BadSample) -> None:
        n = self.counts[bad.reason]
        if not self.warn:
            log.debug("skipped %s", bad)
        elif n <= LOGGED_PER_REASON:
            log.warning("skipped %s", bad)
        elif str(n).rstrip("0") == "1":
            log.warning("skipped %s (%d %s skips so far here; each one is logged at DEBUG)", bad, n, bad.reason)
        else:
            log.debug("skipped %s", bad)

    def handler(self, exc: BaseException) -> bool:
        """A webdataset handler (``handler=counter.handler``): count the bad sample and go on.

        Unlike ``wds.warn_and_continue`` it counts, never sleeps, and re-raises what is not bad data.
        """
        self.record(exc)
        return True

    def merge(self, other: SkipCounter | Mapping[str, Any]) -> SkipCounter:
        """Add another counter (or its :meth:`as_dict`) into this one; returns ``self``."""
        other = other if isinstance(other, SkipCounter) else SkipCounter.from_dict(other)
        self.ok += other.ok
        self.counts.update(other.counts)
        for reason, example in other.examples.items():
            self.examples.setdefault(reason, example)
        return self

    def by_reason(self) -> dict[str, int]:
        """Nonzero counts in the order of :data:`SKIP_REASONS`."""
        return {reason: self.counts[reason] for reason in SKIP_REASONS if self.counts[reason]}

    def as_dict(self) -> dict[str, Any]:
        """``{"seen", "ok", "skipped", "by_reason": {REASON: n}, "examples": {REASON: message}}``, JSON-ready."""
        return {
            "seen": self.seen,
            "ok": self.ok,
            "skipped": self.skipped,
            "by_reason": self.by_reason(),
            "examples": dict(self.examples),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkipCounter:
        """The counter :meth:`as_dict` described (e.g. sent back by a data-loader worker)."""
        unknown = set(data.get("by_reason", {})) - set(SKIP_REASONS)
        if unknown:
            raise ValueError(f"unknown skip reasons {sorted(unknown)}; allowed: {', '.join(SKIP_REASONS)}")
        return cls(int(data.get("ok", 0)), Counter(data.get("by_reason", {})), dict(data.get("examples", {})))

    def summary(self) -> str:
        """One line for logs: ``skipped 3 of 120 samples (2.5%): corrupt_audio 2, too_long 1 (1 above the limits)``."""
        if not self.skipped:
            return f"skipped 0 of {self.seen} samples"
        reasons = ", ".join(f"{reason} {n}" for reason, n in self._top())
        limits = f" ({self.over_limits} above the limits)" if self.over_limits else ""
        return f"skipped {self.skipped} of {self.seen} samples ({self.skipped / self.seen:.1%}): {reasons}{limits}"

    def check(self, max_bad_fraction: float, min_seen: int = 100) -> None:
        """Stop when too many samples were bad. Samples above the limits (:attr:`over_limits`) are neither bad
        nor judged: the fraction is ``bad / (seen - over_limits)``.

        Args:
            max_bad_fraction: The largest allowed fraction (a recipe's ``data.max_bad_fraction``).
            min_seen: Judge only from this many judged samples on, so that one bad sample among the first few
                does not stop a run.

        Raises:
            BadFractionExceeded: The fraction is above ``max_bad_fraction``; the message names it, the most
                frequent bad reasons and an example of the most frequent one.
        """
        judged = self.seen - self.over_limits
        if judged < max(min_seen, 1) or self.bad <= max_bad_fraction * judged:
            return
        top = [(reason, n) for reason, n in self._top() if reason not in LIMIT_REASONS]
        reasons = ", ".join(f"{reason} {n}" for reason, n in top[:3])
        aside = f", not counting {self.over_limits} above the limits" if self.over_limits else ""
        raise BadFractionExceeded(
            f"{self.bad} of {judged} samples were bad ({self.bad / judged:.1%}{aside}), more than "
            f"max_bad_fraction {max_bad_fraction:.1%}; top reasons: {reasons}; e.g. {self.examples.get(top[0][0])}"
        )

    def _top(self) -> list[tuple[str, int]]:
        order = {reason: i for i, reason in enumerate(SKIP_REASONS)}
        return sorted(self.by_reason().items(), key=lambda item: (-item[1], order[item[0]]))
