"""Audio bytes to 16 kHz mono float32 waveforms, through libsndfile (soundfile) and torchaudio's resampler.

libsndfile decodes FLAC, WAV, OGG (Vorbis, Opus) and, from version 1.1, MP3 from memory, so no temporary
files and no ffmpeg are involved. Shape letters: t samples, c channels.
"""

from __future__ import annotations

import io
import re
from fractions import Fraction

import numpy as np
import soundfile as sf
import torch
from torchaudio.functional import resample

from mmadapter.data.skips import BadSample

__all__ = ["AUDIO_EXTENSIONS", "SAMPLE_RATE", "audio_duration", "decode_audio", "resample_audio"]

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS: tuple[str, ...] = ("flac", "wav", "mp3", "ogg")

# torchaudio builds a (new, 1, orig + 2·width) sinc kernel from the gcd-reduced rates: 44 101 → 16 000 Hz
# would need 16 000 × 44 k taps (minutes and gigabytes). Beyond this many kernel elements the ratio is
# replaced by its closest fraction with a small denominator (off by < 2e-4, far below audible pitch).
_MAX_KERNEL = 1 << 22
_MAX_DENOMINATOR = 1000
# MP3 headers (Xing/LAME) state the length; decoding fewer frames than stated by more than this means a cut file.
_MISSING_FRAMES_TOLERANCE = 0.01
_WAV_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)
_BLOCK_FRAMES = 1 << 16


def _info(data: bytes, name: str) -> sf._SoundFileInfo:
    if not data:
        raise BadSample("empty_audio", None, "0 bytes", name)
    try:
        return sf.info(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        raise BadSample("corrupt_audio", None, f"libsndfile cannot open it: {e}", name) from e


def audio_duration(data: bytes, name: str) -> float:
    """The duration in seconds stated by the header, without decoding.

    Args:
        data: The encoded file.
        name: The file or member name, for errors.

    Raises:
        BadSample: ``corrupt_audio`` when the header cannot be read, ``empty_audio`` for 0 bytes.
    """
    info = _info(data, name)
    return info.frames / info.samplerate if info.samplerate > 0 else 0.0


def resample_audio(waveform: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample ``(t,)`` float32 audio with torchaudio's windowed-sinc resampler, from any rate.

    Rates whose reduced ratio would need a huge kernel (e.g. 44 101 Hz) are resampled at the closest ratio
    with a denominator ≤ 1000, which changes duration and pitch by less than 2e-4 (relative).
    """
    if orig_rate == new_rate:
        return waveform
    ratio = Fraction(new_rate, orig_rate)
    if ratio.numerator * ratio.denominator > _MAX_KERNEL:
        ratio = ratio.limit_denominator(_MAX_DENOMINATOR)
    out = resample(torch.from_numpy(waveform), ratio.denominator, ratio.numerator)
    return out.numpy()


def _check_complete(info: sf._SoundFileInfo, decoded: int, name: str) -> None:
    stated = _WAV_DATA_SIZE.search(info.extra_info or "")
    if stated and int(stated.group(1)) not in _WAV_UNKNOWN_SIZES and int(stated.group(2)) < int(stated.group(1)):
        raise BadSample(
            "corrupt_audio", None, f"truncated: {stated.group(2)} of {stated.group(1)} data bytes present", name
        )
    if info.frames > 0 and decoded < info.frames * (1 - _MISSING_FRAMES_TOLERANCE):
        raise BadSample("corrupt_audio", None, f"truncated: decoded {decoded} of {info.frames} frames", name)


def decode_audio(
    data: bytes, name: str, sample_rate: int | None = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Decode FLAC/WAV/OGG/MP3 bytes to a mono float32 waveform.

    Channels are averaged; the result is resampled to ``sample_rate``.

    Args:
        data: The encoded file, exactly as stored.
        name: The file or member name, for errors (the format is detected from the bytes, not the name).
        sample_rate: Output rate in Hz; ``None`` keeps the file's rate (validation without resampling).
        max_seconds: Reject longer audio from its header before decoding it.

    Returns:
        ``(t,)`` float32 samples (full scale ±1) at ``sample_rate``, t ≥ 1.

    Raises:
        BadSample: ``corrupt_audio`` (undecodable, truncated, non-finite samples, no sample rate),
            ``empty_audio`` (0 bytes or 0 samples), ``too_long`` (longer than ``max_seconds``).
    """
    info = _info(data, name)
    if info.samplerate <= 0 or info.channels <= 0:
        raise BadSample("corrupt_audio", None, f"{info.samplerate} Hz, {info.channels} channels", name)
    if max_seconds is not None and info.frames / info.samplerate > max_seconds:
        raise BadSample("too_long", None, f"{info.frames / info.samplerate:.1f} s > {max_seconds} s", name)
    mono = _read_mono(data, name, None if max_seconds is None else int(max_seconds * info.samplerate))
    if mono.size == 0:
        raise BadSample("empty_audio", None, "0 samples", name)
    _check_complete(info, mono.size, name)
    if not np.isfinite(mono).all():
        raise BadSample("corrupt_audio", None, "non-finite samples (NaN or inf)", name)
    if sample_rate is not None:
        mono = resample_audio(mono, info.samplerate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _read_mono(data: bytes, name: str, max_frames: int | None) -> np.ndarray:
    # Block by block, not one sf.read: that allocates whatever length the header claims before decoding,
    # and an MP3's Xing header can claim anything. Mixing each block to mono also halves peak memory.
    blocks = []
    frames = 0
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            while len(chunk := f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)):  # (t, c)
                blocks.append(chunk.mean(axis=1, dtype=np.float32) if chunk.shape[1] > 1 else chunk[:, 0])
                frames += len(chunk)
                if max_frames is not None and frames > max_frames:
                    break
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        raise BadSample("corrupt_audio", None, f"libsndfile cannot decode it: {e}", name) from e
    if max_frames is not None and frames > max_frames:
        raise BadSample("too_long", None, f"more than {max_frames} frames (the header said fewer)", name)
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
