"""Whisper's audio encoder (transformers), with variable-length input and ≤30 s windows for long audio.

transformers' ``WhisperEncoder.forward`` insists on 3000 mel frames (30 s). With ``variable_length`` we run
our own forward over its modules: the positional embedding is sliced to the real length and a batch of
clips of different lengths gets a key-padding mask, so each clip's features are those it gets alone.
Audio longer than one window is split into windows whose outputs are concatenated, never truncated.

Shape letters: n clips, w windows (all clips), c mel bins, t mel frames, s output frames, d ``embed_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HfWhisperEncoder

from mmadapter.encoders.base import ENCODERS, Encoder, EncoderSpec, on_meta_device
from mmadapter.encoders.log_mel import HOP_LENGTH, whisper_log_mel

__all__ = ["WhisperEncoder", "WhisperSpec", "whisper", "whisper_test"]

TEST_CONFIG: dict[str, Any] = {
    "d_model": 64,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "num_mel_bins": 80,
}

# Checkpoint key prefixes of the encoder in WhisperForConditionalGeneration ("model.encoder.") and WhisperModel
# ("encoder."); a saved bare encoder has none.
ENCODER_KEYS = {r"^(model\.)?encoder\.": ""}


class _WhisperCheckpointEncoder(HfWhisperEncoder):
    """transformers' Whisper encoder, loading from a whole Whisper checkpoint: the decoder's weights are
    skipped without being reported as unexpected."""

    _keys_to_ignore_on_load_unexpected = (r"^(model\.)?decoder\.", r"^proj_out\.")


class WhisperSpec(EncoderSpec):
    """Options of the ``whisper`` encoders.

    ``name_or_path`` is a hub id or local directory holding a Whisper checkpoint (``WhisperModel`` or
    ``WhisperForConditionalGeneration``); ``config`` holds ``WhisperConfig`` fields for random weights.
    """

    variable_length: bool = True
    """Encode only the real frames (True) or pad every window to 30 s as Whisper was trained (False)."""


class WhisperEncoder(Encoder):
    """Whisper encoder over log-mel input of any length.

    Args:
        encoder: transformers' Whisper encoder module.
        variable_length: Encode only the real frames of each window (with a key-padding mask in batches);
            otherwise pad every window to ``window_frames`` with the clip's silence level, as in training.
    """

    modality = "audio"

    def __init__(self, encoder: HfWhisperEncoder, variable_length: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.variable_length = variable_length
        self.embed_dim = encoder.config.d_model
        self.n_mels = encoder.config.num_mel_bins
        self.window_frames = 2 * encoder.config.max_source_positions  # conv2 has stride 2

    def output_length(self, input_length: int) -> int:
        """Output frames for ``input_length`` mel frames: ``ceil(w / 2)`` summed over the ≤30 s windows."""
        full, rest = divmod(int(input_length), self.window_frames)
        return full * self.window_frames // 2 + (rest + 1) // 2

    def transform(self, raw: Any) -> Tensor:
        """Log-mel ``(c, t)`` of a 16 kHz mono float waveform ``(samples,)`` (numpy array or tensor)."""
        waveform = torch.as_tensor(raw)
        if waveform.dim() != 1:
            raise ValueError(f"expected a mono (samples,) waveform, got shape {tuple(waveform.shape)}")
        return whisper_log_mel(waveform, self.n_mels)

    def featurize(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel of a ``(n, l)`` zero-padded waveform batch on its own device (``data.audio_features: gpu``)."""
        return whisper_log_mel(waveforms, self.n_mels, lengths), lengths // HOP_LENGTH

    def input_length_of_raw(self, samples: int) -> int:
        return int(samples) // HOP_LENGTH

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode log-mel ``(n, c, t)`` with ``(n,)`` real frame counts into ``(n, s, d)`` and ``(n,)`` lengths.

        Rows past each clip's output length are zero.
        """
        if inputs.dim() != 3 or inputs.shape[1] != self.n_mels:
            raise ValueError(f"expected log-mel (n, {self.n_mels}, t), got shape {tuple(inputs.shape)}")
        frames = [int(v) for v in lengths.tolist()]
        if len(frames) != inputs.shape[0] or min(frames) < 1 or max(frames) > inputs.shape[-1]:
            raise ValueError(f"lengths {frames} do not fit log-mel input of shape {tuple(inputs.shape)}")
        inputs = inputs.to(self.encoder.conv1.weight.dtype)

        windows: list[Tensor] = []  # (c, ≤window_frames) each
        owners: list[int] = []
        for i, length in enumerate(frames):
            for start in range(0, length, self.window_frames):
                windows.append(inputs[i, :, start : min(start + self.window_frames, length)])
                owners.append(i)
        window_lengths = torch.tensor([w.shape[-1] for w in windows], device=inputs.device)
        if self.variable_length:
            encoded = self._encode_variable(self._stack(windows, fill=[0.0] * len(windows)), window_lengths)
        else:
            # Whisper saw silence as the clip's floor level: max - 8 in log10, i.e. max - 2 after (x + 4) / 4.
            floor = [float(inputs[i, :, : frames[i]].max()) - 2.0 for i in owners]
            encoded = self.encoder(input_features=self._stack(windows, fill=floor)).last_hidden_state

        out_lengths = (window_lengths - 1) // 2 + 1
        pieces: list[list[Tensor]] = [[] for _ in frames]
        for window, owner, length in zip(encoded, owners, out_lengths.tolist(), strict=True):
            pieces[owner].append(window[:length])
        features = pad_sequence([torch.cat(p) for p in pieces], batch_first=True)  # (n, s, d)
        return features, torch.tensor([self.output_length(f) for f in frames], device=inputs.device)

    def _stack(self, windows: list[Tensor], fill: list[float]) -> Tensor:
        """Windows into one ``(w, c, t)`` batch padded to the longest (or to 30 s when not variable-length)."""
        width = max(w.shape[-1] for w in windows) if self.variable_length else self.window_frames
        batch = windows[0].new_empty(len(windows), self.n_mels, width)
        for row, window, value in zip(batch, windows, fill, strict=True):
            row[:, : window.shape[-1]] = window
            row[:, window.shape[-1] :] = value
        return batch

    def _encode_variable(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """transformers' encoder forward on ``(w, c, t)`` windows of ``(w,)`` real frames, without the 30 s
        padding: zero-padded convolutions, sliced positions, and padded keys masked out."""
        enc = self.encoder
        real = torch.arange(inputs.shape[-1], device=inputs.device) < lengths[:, None]  # (w, t)
        # Zeroing the padded frames after conv1 makes conv2 see what its own zero padding gives a clip alone.
        hidden = F.gelu(enc.conv1(inputs)).masked_fill(~real[:, None], 0.0)
        hidden = F.gelu(enc.conv2(hidden)).transpose(1, 2)  # (w, s, d)
        hidden = hidden + enc.embed_positions.weight[: hidden.shape[1]]
        hidden = F.dropout(hidden, p=enc.dropout, training=self.training)

        out_lengths = (lengths - 1) // 2 + 1
        mask = None
        if bool((out_lengths < hidden.shape[1]).any()):
            keep = torch.arange(hidden.shape[1], device=inputs.device) < out_lengths[:, None]  # (w, s)
            mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(~keep, torch.finfo(hidden.dtype).min)[:, None, None, :]  # (w, 1, 1, s)
        for layer in enc.layers:
            if self.training and enc.layerdrop > 0.0 and torch.rand(()) < enc.layerdrop:
                continue
            hidden = layer(hidden, mask)
        return enc.layer_norm(hidden)


def _load(spec: WhisperSpec) -> HfWhisperEncoder:
    """The encoder module: from ``name_or_path`` (only its config on the meta device) or random from ``config``."""
    if spec.name_or_path is None:
        return HfWhisperEncoder(WhisperConfig(**(spec.config or {})))
    if on_meta_device():
        return HfWhisperEncoder(WhisperConfig.from_pretrained(spec.name_or_path))
    encoder, info = _WhisperCheckpointEncoder.from_pretrained(
        spec.name_or_path, key_mapping=ENCODER_KEYS, output_loading_info=True
    )
    if info["missing_keys"]:  # transformers only warns; random weights in a pretrained encoder are a bug
        missing = sorted(info["missing_keys"])
        raise ValueError(f"{spec.name}: {spec.name_or_path} lacks {len(missing)} encoder weight(s), e.g. {missing[:3]}")
    return encoder


@ENCODERS.register(spec=WhisperSpec)
def whisper(spec: WhisperSpec) -> WhisperEncoder:
    """Whisper encoder of any size, e.g. ``name_or_path: openai/whisper-large-v3``."""
    return WhisperEncoder(_load(spec), variable_length=spec.variable_length).eval()


@ENCODERS.register(spec=WhisperSpec)
def whisper_test(spec: WhisperSpec) -> WhisperEncoder:
    """Tiny random Whisper encoder (d_model 64, 2 layers, 80 mel bins) for tests."""
    config = WhisperConfig(**{**TEST_CONFIG, **(spec.config or {})})
    return WhisperEncoder(HfWhisperEncoder(config), variable_length=spec.variable_length).eval()
