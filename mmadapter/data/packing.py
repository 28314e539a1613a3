"""Packing tokenized samples into token budgets: whole samples only, never split.

``pack_stream`` fills rows of at most ``max_tokens`` for the packed layout (best fit over a small buffer,
so short samples fill the gaps long ones leave). ``bucket_stream`` groups samples of similar length for the
padded layout, so that ``rows × longest ≤ max_tokens`` wastes little on padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from mmadapter.batch import MultimodalBatch, Sample
from mmadapter.data.skips import BadSample

__all__ = ["batch_stream", "bucket_stream", "oversized", "pack_stream"]


def pack_stream(
    samples: Iterable[Sample],
    max_tokens: int,
    buffer: int = 64,
    on_skip: Callable[[BadSample], None] | None = None,
) -> Iterator[list[Sample]]:
    """Group samples into lists whose total length is ≤ ``max_tokens``.

    Keeps up to ``buffer`` open groups; each sample goes into the fullest group it fits (best fit), and the
    fullest group is emitted when the buffer overflows. Samples longer than ``max_tokens`` are reported to
    ``on_skip`` as ``too_long`` and dropped from the stream.
    """
    open_groups: list[tuple[int, list[Sample]]] = []
    for sample in samples:
        error = oversized(sample, max_tokens)
        if error is not None:
            _skip(on_skip, error)
            continue
        n = len(sample.chat)
        fits = [i for i, (used, _) in enumerate(open_groups) if used + n <= max_tokens]
        if fits:
            best = max(fits, key=lambda i: open_groups[i][0])
            used, group = open_groups[best]
            group.append(sample)
            open_groups[best] = (used + n, group)
        else:
            open_groups.append((n, [sample]))
        full = [i for i, (used, _) in enumerate(open_groups) if used == max_tokens]
        if full or len(open_groups) > buffer:
            i = full[0] if full else max(range(len(open_groups)), key=lambda j: open_groups[j][0])
            yield open_groups.pop(i)[1]
    for _, group in sorted(open_groups, key=lambda g: -g[0]):
        yield group


def bucket_stream(
    samples: Iterable[Sample],
    max_tokens: int,
    buffer: int = 256,
    on_skip: Callable[[BadSample], None] | None = None,
) -> Iterator[list[Sample]]:
    """Group samples of similar length so that ``len(group) × longest ≤ max_tokens`` (padded layout)."""
    pending: list[Sample] = []

    def drain(final: bool) -> Iterator[list[Sample]]:
        pending.sort(key=lambda s: len(s.chat))
        group: list[Sample] = []
        keep: list[Sample] = []
        for s in pending:
            if group and (len(group) + 1) * len(s.chat) > max_tokens:
                yield group
                group = []
            group.append(s)
        if group:
            if final:
                yield group
            else:
                keep = group
        pending[:] = keep

    for sample in samples:
        error = oversized(sample, max_tokens)
        if error is not None:
            _skip(on_skip, error)
            continue
        pending.append(sample)
        if len(pending) >= buffer:
            yield from drain(final=False)
    yield from drain(final=True)


def batch_stream(
    samples: Iterable[Sample],
    max_tokens: int,
    layout: Literal["packed", "padded"],
    pad_id: int,
    on_skip: Callable[[BadSample], None] | None = None,
) -> Iterator[MultimodalBatch]:
    """Samples → :class:`MultimodalBatch` in the chosen layout."""
    if layout == "packed":
        for group in pack_stream(samples, max_tokens, on_skip=on_skip):
            yield MultimodalBatch.pack(group)
    else:
        for group in bucket_stream(samples, max_tokens, on_skip=on_skip):
            yield MultimodalBatch.pad(group, pad_id)


def oversized(sample: Sample, max_tokens: int) -> BadSample | None:
    """The ``too_long`` error for a sample that no row of ``max_tokens`` can hold; ``None`` if one can."""
    n = len(sample.chat)
    if n <= max_tokens:
        return None
    return BadSample("too_long", sample.key, f"{n} tokens exceed data.max_tokens={max_tokens}")


def _skip(on_skip: Callable[[BadSample], None] | None, error: BadSample) -> None:
    if on_skip is None:
        raise error
    on_skip(error)
