"""Signal helpers for synthesised speech: band-limited FFT resampling and cutting words apart at pauses."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np

__all__ = ["resample_fft", "word_spans"]


def resample_fft(wave: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of ``(t,)`` audio by truncating (or zero-padding) its spectrum.

    Exact for periodic signals and fine for clips that start and end in silence; much faster than a
    windowed-sinc resampler for ratios like 22 050 → 16 000 Hz, whose reduced fraction needs a long kernel.
    The clip is zero-padded to a length whose FFTs at both rates are fast, and the padding cut off again.
    """
    if rate == new_rate:
        return wave
    ratio = Fraction(new_rate, rate)
    blocks = _smooth_at_least(-(-wave.size // ratio.denominator))
    n_in, n_out = blocks * ratio.denominator, blocks * ratio.numerator
    spectrum = np.fft.rfft(wave, n_in)
    bins = n_out // 2 + 1
    spectrum = spectrum[:bins] if spectrum.size >= bins else np.pad(spectrum, (0, bins - spectrum.size))
    out = np.fft.irfft(spectrum, n_out) * (n_out / n_in)
    return out[: round(wave.size * new_rate / rate)].astype(np.float32)


def _smooth_at_least(n: int) -> int:
    """The smallest number ≥ ``n`` with no prime factor above 5 (FFT sizes that are fast)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def word_spans(wave: np.ndarray, rate: int, count: int, name: str) -> list[tuple[int, int]]:
    """Sample spans of the ``count`` words of ``wave``, which espeak-ng spoke with long pauses between them.

    Loud 10 ms frames (above 2% of the loudest) form runs; runs less than 0.2 s apart are one word (stop
    closures inside words are shorter), and while there are more runs than words the two closest merge.

    Raises:
        RuntimeError: fewer than ``count`` words were found (the message names ``name``).
    """
    hop = max(1, rate // 100)
    frames = wave[: wave.size // hop * hop].reshape(-1, hop)
    energy = np.sqrt((frames**2).mean(axis=1))
    loud = np.flatnonzero(energy > 0.02 * max(float(energy.max()), 1e-9))
    if loud.size == 0:
        raise RuntimeError(f"{name}: espeak-ng produced silence")
    breaks = np.flatnonzero(np.diff(loud) > 1)
    starts, ends = loud[np.r_[0, breaks + 1]], loud[np.r_[breaks, loud.size - 1]]
    runs = [[int(a), int(b) + 1] for a, b in zip(starts, ends, strict=True)]
    merged = [runs[0]]
    for run in runs[1:]:
        if run[0] - merged[-1][1] < 20:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    while len(merged) > count:
        i = int(np.argmin([b[0] - a[1] for a, b in itertools.pairwise(merged)]))
        merged[i : i + 2] = [[merged[i][0], merged[i + 1][1]]]
    if len(merged) < count:
        raise RuntimeError(f"{name}: found {len(merged)} spoken words, expected {count}")
    return [(a * hop, b * hop) for a, b in merged]
