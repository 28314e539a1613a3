"""Our torch log-mel against transformers' WhisperFeatureExtractor, alone and in padded batches."""

from __future__ import annotations

import pytest
import torch
from conftest import random_audio
from transformers import WhisperFeatureExtractor

from mmadapter.data.skips import BadSample
from mmadapter.encoders.log_mel import whisper_log_mel


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [1.0, 7.0, 30.0])
def test_matches_whisper_feature_extractor(seconds: float, n_mels: int) -> None:
    audio = random_audio(seconds, seed=int(seconds))
    reference = WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="pt")
    ours = whisper_log_mel(audio, n_mels)
    frames = len(audio) // 160
    assert ours.shape == (n_mels, frames)
    torch.testing.assert_close(ours, reference.input_features[0, :, :frames], atol=1e-4, rtol=0)


def test_batch_with_lengths_equals_each_clip_alone() -> None:
    clips = [torch.from_numpy(random_audio(s, seed=i)) for i, s in enumerate([0.5, 2.03, 1.2])]
    lengths = torch.tensor([len(c) for c in clips])
    padded = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    features = whisper_log_mel(padded, lengths=lengths)
    assert features.shape == (3, 80, int(lengths.max()) // 160)
    for clip, feats in zip(clips, features, strict=True):
        alone = whisper_log_mel(clip)
        torch.testing.assert_close(feats[:, : alone.shape[-1]], alone, atol=1e-5, rtol=0)


def test_quiet_clip_is_clamped_to_8_below_its_peak() -> None:
    audio = torch.zeros(16000)
    audio[8000:8400] = 0.5
    features = whisper_log_mel(audio)
    assert float(features.max() - features.min()) == pytest.approx(2.0)  # 8 in log10 units, / 4


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="waveform"):
        whisper_log_mel(torch.zeros(1, 2, 1600))
    with pytest.raises(BadSample, match="shorter than one") as info:  # a bad sample: skipped, counted, keyed
        whisper_log_mel(torch.zeros(100))
    assert info.value.reason == "empty_audio"
