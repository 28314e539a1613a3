"""The encoder interface: a pretrained modality encoder that turns raw inputs into feature sequences.

Shape letters: n items, c channels / mel bins, t input frames, s output frames, d ``embed_dim``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator
from torch import Tensor, nn

from mmadapter.registry import ComponentSpec, Registry

Modality = Literal["audio", "image", "graph"]

__all__ = ["ENCODERS", "Encoder", "EncoderSpec", "Modality", "on_meta_device"]


class Encoder(nn.Module, ABC):
    """A modality encoder.

    Subclasses set ``modality`` and ``embed_dim`` and implement :meth:`forward`, :meth:`output_length` and
    :meth:`transform`. The model freezes encoders unless a recipe stage trains ``encoders.<modality>``.
    """

    modality: ClassVar[Modality]
    embed_dim: int

    @abstractmethod
    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a batch of items.

        Args:
            inputs: Batched model inputs as :meth:`transform` makes them and the batch pads them: log-mel
                ``(n, c, t)`` for audio, pixels ``(n, 3, H, W)`` for images.
            lengths: ``(n,)`` real input length of each item (mel frames for audio; ignored for images).

        Returns:
            Features ``(n, s, d)`` and ``(n,)`` output lengths; ``lengths[i] == output_length(input i)``.
        """

    @abstractmethod
    def output_length(self, input_length: int) -> int:
        """Number of feature vectors produced for an input of ``input_length`` (mel frames for audio;
        images: any value, the count is fixed)."""

    @abstractmethod
    def transform(self, raw: Any) -> Tensor:
        """Turn one decoded item into this encoder's input: a 16 kHz mono float waveform ``(samples,)``
        becomes log-mel ``(c, t)``; a PIL image becomes pixels ``(3, H, W)``."""

    def featurize(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Batched :meth:`transform` of raw ``(n, l)`` waveforms with ``(n,)`` real samples on the model's
        device (``data.audio_features: gpu``); returns encoder inputs and their ``(n,)`` input lengths.

        Raises:
            NotImplementedError: this encoder only takes inputs transformed in the data pipeline.
        """
        raise NotImplementedError(f"{type(self).__name__} has no device-side feature extraction")

    def input_length_of_raw(self, samples: int) -> int:
        """The :meth:`input_length` that :meth:`featurize` gives a waveform of ``samples`` samples."""
        raise NotImplementedError(f"{type(self).__name__} has no device-side feature extraction")

    def input_length(self, features: Tensor) -> int:
        """Length of one transformed item, as passed to :meth:`output_length`."""
        return int(features.shape[-1])

    def bind_llm(self, llm: nn.Module, tokenizer: Any) -> None:
        """Called by :meth:`MultimodalLM.from_recipe` once the LLM is built, for encoders whose inputs depend on
        it (graph node texts embedded with the LLM's input embeddings). Default: nothing."""


class EncoderSpec(ComponentSpec):
    """Options of an encoder family whose weights come from ``name_or_path`` or are random from ``config``.

    Exactly one of the two is required, except by the ``*_test`` variants: they build a tiny random model
    (``config``, when given, overrides its shape) and take no ``name_or_path``.
    """

    @model_validator(mode="after")
    def _one_weight_source(self) -> EncoderSpec:
        if self.name.endswith("_test"):
            if self.name_or_path is not None:
                raise ValueError(f"{self.name} builds a tiny random model; it takes no name_or_path")
        elif (self.name_or_path is None) == (self.config is None):
            raise ValueError(
                f"{self.name} needs exactly one of name_or_path (pretrained weights) and config (random weights)"
            )
        return self


def on_meta_device() -> bool:
    """True inside ``with torch.device("meta")``: builders that create tensors on a device argument of
    their own (open_clip) must then pass ``device="meta"`` explicitly."""
    return torch.empty(()).device.type == "meta"


ENCODERS: Registry[Any] = Registry("encoder")
