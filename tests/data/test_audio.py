from __future__ import annotations

import io
import time

import numpy as np
import pytest
import soundfile as sf
from media_samples import audio_bytes

from mmadapter.data.audio import SAMPLE_RATE, audio_duration, decode_audio
from mmadapter.data.skips import BadSample

MP3 = "MP3" in sf.available_formats()
SECONDS = 1.3
FREQ = 440.0


def peak_hz(wave: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("fmt", ["FLAC", "WAV", "MP3"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_rate_and_format_to_16k_mono(fmt: str, channels: int, rate: int) -> None:
    if fmt == "MP3" and not MP3:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3 support (needs 1.1+ built with mpg123/lame)")
    data = audio_bytes(SECONDS, rate, channels, FREQ, fmt)
    wave = decode_audio(data, f"sine.{fmt.lower()}")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - SECONDS * SAMPLE_RATE) <= SAMPLE_RATE // 100  # ±1 frame of 10 ms
    assert abs(peak_hz(wave) - FREQ) < 2.0
    # Channels are averaged: amplitudes 0.4 and 0.2 give 0.3; one channel keeps its 0.4.
    amplitude = np.sqrt(2) * np.sqrt(np.mean(wave[SAMPLE_RATE // 10 : -SAMPLE_RATE // 10] ** 2))
    assert amplitude == pytest.approx(0.3 if channels == 2 else 0.4, rel=0.05)
    assert audio_duration(data, "x") == pytest.approx(SECONDS, abs=1 / rate)


def test_native_rate_when_not_resampling() -> None:
    wave = decode_audio(audio_bytes(0.5, 22050, 2, fmt="WAV"), "x.wav", sample_rate=None)
    assert wave.shape == (11025,)


def test_odd_rate_resamples_quickly_and_correctly() -> None:
    # 44 101 and 16 000 are coprime: an exact sinc kernel would take minutes and gigabytes.
    start = time.perf_counter()
    wave = decode_audio(audio_bytes(SECONDS, 44101, 1, FREQ, "WAV"), "odd.wav")
    assert time.perf_counter() - start < 5
    assert abs(wave.size - SECONDS * SAMPLE_RATE) <= 2
    assert abs(peak_hz(wave) - FREQ) < 2.0


def test_empty_audio() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 1), np.float32), 16000, format="WAV")
    for data in (buf.getvalue(), b""):
        with pytest.raises(BadSample) as info:
            decode_audio(data, "empty.wav")
        assert info.value.reason == "empty_audio" and info.value.source == "empty.wav"


@pytest.mark.parametrize("fmt", ["FLAC", "WAV", "MP3", "OGG"])
def test_truncated_audio_is_corrupt(fmt: str) -> None:
    if fmt == "MP3" and not MP3:
        pytest.skip("no MP3 support in this libsndfile")
    data = audio_bytes(2.0, 44100, 1, fmt=fmt)
    with pytest.raises(BadSample) as info:
        decode_audio(data[: len(data) // 2], f"cut.{fmt.lower()}")
    assert info.value.reason == "corrupt_audio"


def test_garbage_and_non_finite_audio_are_corrupt() -> None:
    with pytest.raises(BadSample, match="corrupt_audio: libsndfile cannot open it"):
        decode_audio(np.random.default_rng(0).bytes(4000), "noise.flac")
    buf = io.BytesIO()
    sf.write(buf, np.array([[0.1], [np.nan], [0.2]], np.float32), 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(BadSample, match="non-finite"):
        decode_audio(buf.getvalue(), "nan.wav")


def test_too_long_is_rejected_from_the_header() -> None:
    with pytest.raises(BadSample) as info:
        decode_audio(audio_bytes(2.0, 16000), "long.flac", max_seconds=1.5)
    assert info.value.reason == "too_long"
