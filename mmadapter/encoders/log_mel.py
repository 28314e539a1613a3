"""Whisper's log-mel spectrogram computed with ``torch.stft``, on any device, one clip or a padded batch.

Matches ``transformers.WhisperFeatureExtractor`` (within 1e-4 on the real frames) without padding every clip
to 30 s: a clip is treated as if followed by silence up to the next multiple of 30 s, as the feature extractor
pads it, but only the frames of the real samples are computed and returned.

Shape letters: n clips, l samples (16 kHz), c mel bins, t frames (``l // 160``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from transformers.audio_utils import mel_filter_bank

from mmadapter.data.skips import BadSample

__all__ = ["HOP_LENGTH", "N_FFT", "SAMPLE_RATE", "whisper_log_mel"]

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE
"""Whisper's feature extractor pads (and the model windows) audio to 30 s chunks."""


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> Tensor:
    """``(c, N_FFT // 2 + 1)`` Slaney-normalised mel filters, the ones WhisperFeatureExtractor uses."""
    filters = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.ascontiguousarray(filters.T)).float()


def whisper_log_mel(waveform: Tensor | np.ndarray, n_mels: int = 80, lengths: Tensor | None = None) -> Tensor:
    """Whisper log-mel features of 16 kHz mono audio.

    log10 of the mel power spectrum (Hann window 400, hop 160), clamped to 8 below the clip's maximum and
    mapped by ``(x + 4) / 4``, exactly as Whisper was trained.

    Args:
        waveform: ``(l,)`` one clip or ``(n, l)`` clips padded with zeros, float samples in [-1, 1].
        n_mels: Mel bins ``c`` (80 for Whisper up to large-v2, 128 for large-v3).
        lengths: ``(n,)`` real samples of each clip in a batch (default: all ``l``). Each clip's maximum is
            taken over its own frames only, so its features do not depend on the other clips of the batch.

    Returns:
        ``(c, t)`` or ``(n, c, t)`` features with ``t = l // 160``; in a batch, clip ``i`` has
        ``lengths[i] // 160`` real frames and the frames after them are padding.
    """
    audio = torch.as_tensor(waveform)
    if audio.dim() not in (1, 2):
        raise ValueError(f"expected a (samples,) or (n, samples) waveform, got shape {tuple(audio.shape)}")
    single = audio.dim() == 1
    audio = audio.reshape(-1, audio.shape[-1]).float()
    samples = audio.shape[-1]
    if samples < HOP_LENGTH:
        # a bad sample (it is a ValueError), so that the data pipeline and inference skip it with its key
        raise BadSample("empty_audio", None, f"{samples} samples: shorter than one {HOP_LENGTH}-sample frame")
    # Silence up to the next 30 s boundary, as the feature extractor pads; past n_fft // 2 it changes no frame.
    audio = F.pad(audio, (0, min((-samples) % CHUNK_SAMPLES, N_FFT // 2)))
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., : samples // HOP_LENGTH].abs().square()  # (n, N_FFT // 2 + 1, t)
    mel = _mel_filters(n_mels).to(audio.device) @ power  # (n, c, t)
    log_spec = mel.clamp(min=1e-10).log10()

    if lengths is None:
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
    else:
        frames = torch.as_tensor(lengths, device=audio.device).reshape(-1, 1, 1) // HOP_LENGTH
        real = torch.arange(log_spec.shape[-1], device=audio.device) < frames  # (n, 1, t)
        peak = log_spec.masked_fill(~real, float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    features = (log_spec + 4.0) / 4.0
    return features[0] if single else features
