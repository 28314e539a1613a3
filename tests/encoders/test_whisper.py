"""Whisper encoder: loading both checkpoint kinds by path, variable-length batches, long-audio windows."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_audio
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

from mmadapter.encoders import ENCODERS
from mmadapter.encoders.whisper import TEST_CONFIG, WhisperEncoder, WhisperSpec

TINY = WhisperConfig(
    **TEST_CONFIG,
    decoder_layers=1,
    decoder_attention_heads=4,
    decoder_ffn_dim=128,
    vocab_size=64,
    max_target_positions=32,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
)


def batch(mels: list[torch.Tensor], fill: float = -0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel items padded into ``(n, c, t)`` with a non-zero value, as a careless collator might."""
    width = max(m.shape[-1] for m in mels)
    inputs = torch.stack([F.pad(m, (0, width - m.shape[-1]), value=fill) for m in mels])
    return inputs, torch.tensor([m.shape[-1] for m in mels])


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    torch.manual_seed(0)
    return ENCODERS.get("whisper_test")(WhisperSpec(name="whisper_test"))


@pytest.mark.parametrize("checkpoint", [WhisperForConditionalGeneration, WhisperModel])
def test_load_by_path_gives_identical_outputs(tmp_path, checkpoint) -> None:
    torch.manual_seed(0)
    original = checkpoint(TINY).eval()
    original.save_pretrained(tmp_path)
    loaded = ENCODERS.get("whisper")(WhisperSpec(name="whisper", name_or_path=str(tmp_path)))
    reference = WhisperEncoder(copy.deepcopy(original.get_encoder())).eval()

    assert not loaded.training
    assert loaded.state_dict().keys() == reference.state_dict().keys()
    mels = [loaded.transform(random_audio(s, seed=i)) for i, s in enumerate([1.0, 3.3])]
    with torch.no_grad():
        assert torch.equal(loaded(*batch(mels))[0], reference(*batch(mels))[0])
        # Fixed 30 s windows equal transformers' own forward over a 30 s clip.
        full = loaded.transform(random_audio(30.0, seed=3))[None]
        loaded.variable_length = False
        ours, _ = loaded(full, torch.tensor([3000]))
        assert torch.equal(ours, original.get_encoder()(input_features=full).last_hidden_state)


def test_variable_length_batch_with_long_audio(encoder: WhisperEncoder) -> None:
    mels = [encoder.transform(random_audio(s, seed=i)) for i, s in enumerate([1.0, 7.3, 30.0, 65.0, 2.05])]
    assert [m.shape[-1] for m in mels] == [100, 730, 3000, 6500, 205]
    inputs, frames = batch(mels)
    with torch.no_grad():
        features, lengths = encoder(inputs, frames)
        alone = [encoder(mels[i][None], frames[i : i + 1])[0][0] for i in (0, 4)]
        window, _ = encoder(mels[3][None, :, 3000:6000], torch.tensor([3000]))

    want = [encoder.output_length(int(f)) for f in frames]
    assert want == [50, 365, 1500, 3250, 103]  # 65 s: windows of 3000 + 3000 + 500 frames, none truncated
    assert lengths.tolist() == want
    assert features.shape == (5, 3250, encoder.embed_dim)
    assert all(features[i, n:].abs().max() == 0 for i, n in enumerate(want) if n < 3250)  # zero padding rows
    # A clip's features depend neither on the rest of the batch nor on its padding (an odd frame count makes
    # the last conv2 output read one frame past the clip).
    torch.testing.assert_close(features[0, :50], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(features[4, :103], alone[1], atol=1e-5, rtol=0)
    # The second window of the long clip is encoded on its own, positions restarting at 0.
    torch.testing.assert_close(features[3, 1500:3000], window[0], atol=1e-5, rtol=0)


def test_fixed_windows_pad_to_30_seconds(encoder: WhisperEncoder) -> None:
    mels = [encoder.transform(random_audio(s, seed=i)) for i, s in enumerate([1.0, 40.0])]
    inputs, frames = batch(mels)
    classic = copy.deepcopy(encoder)
    classic.variable_length = False
    with torch.no_grad():
        features, lengths = classic(inputs, frames)
        variable, _ = encoder(inputs, frames)
        # Classic Whisper input: the clip followed by its silence level (the log-mel floor, max - 2).
        padded = F.pad(mels[0], (0, 2900), value=float(mels[0].max()) - 2.0)[None]
        library = classic.encoder(input_features=padded).last_hidden_state
    assert lengths.tolist() == [50, 2000]
    assert features.shape == (2, 2000, encoder.embed_dim)
    assert torch.equal(features[0, :50], library[0, :50])
    assert not torch.allclose(features[0, :50], variable[0, :50])  # attending to padding changes features


@pytest.mark.parametrize(("frames", "want"), [(0, 0), (1, 1), (2, 1), (3, 2), (2999, 1500), (3000, 1500), (3001, 1501)])
def test_output_length(encoder: WhisperEncoder, frames: int, want: int) -> None:
    assert encoder.output_length(frames) == want


def test_bad_inputs_are_rejected(encoder: WhisperEncoder) -> None:
    with pytest.raises(ValueError, match="log-mel"):
        encoder(torch.zeros(1, 81, 10), torch.tensor([10]))
    with pytest.raises(ValueError, match="do not fit"):
        encoder(torch.zeros(1, 80, 10), torch.tensor([11]))
    with pytest.raises(ValueError, match="mono"):
        encoder.transform(torch.zeros(2, 1600))


def test_checkpoint_without_encoder_weights_is_rejected(tmp_path) -> None:
    WhisperModel(TINY).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"lacks \d+ encoder weight"):
        ENCODERS.get("whisper")(WhisperSpec(name="whisper", name_or_path=str(tmp_path)))
