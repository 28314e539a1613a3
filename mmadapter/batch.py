"""MultimodalBatch: the one data structure between the data pipeline and the model (DESIGN.md §4).

Shape letters: b rows, t tokens per row, S samples, n items of one modality.

Packed layout (default): all samples concatenated into one row; ``position_ids`` restart at 0 per sample,
``cu_seqlens`` (int32, S+1) marks sample boundaries, no attention mask. Padded layout: one sample per row,
``attention_mask`` marks real tokens (right padding for training, left padding for generation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.data import Batch, Data

from mmadapter.llm.chat import IGNORE_INDEX, EncodedChat

__all__ = ["ModalityItems", "MultimodalBatch", "Sample"]


@dataclass
class Sample:
    """One tokenized sample with its transformed modality items (each ``(c, t)`` audio, ``(3, H, W)`` image or a
    torch_geometric ``Data`` graph)."""

    key: str
    chat: EncodedChat
    items: dict[str, list[Tensor | Data]] = field(default_factory=dict)
    raw: set[str] = field(default_factory=set)
    """Modalities whose items are raw waveforms ``(l,)`` to be featurized on the model's device."""
    lang: str | None = None
    """The sample's language tag (``lang``), where known."""


@dataclass
class ModalityItems:
    """The items of one modality in a batch, in sample order.

    Attributes:
        inputs: Encoder inputs, padded along the last axis to the longest: ``(n, c, t)`` or ``(n, 3, H, W)``;
            graphs are one torch_geometric ``Batch`` of the n graphs.
        lengths: ``(n,)`` real input length of each item (``input_length`` of the encoder; nodes for graphs).
        sample: ``(n,)`` index of the sample each item belongs to.
        raw: ``inputs`` are zero-padded raw waveforms ``(n, l)`` and ``lengths`` their samples; the encoder
            featurizes them on the model's device (``data.audio_features: gpu``).
    """

    inputs: Tensor | Batch
    lengths: Tensor
    sample: Tensor
    raw: bool = False

    def to(self, device: torch.device | str) -> ModalityItems:
        return ModalityItems(self.inputs.to(device), self.lengths.to(device), self.sample.to(device), self.raw)

    @classmethod
    def collate(cls, per_sample: Sequence[list[Tensor | Data]], raw: bool = False) -> ModalityItems:
        """Batch the items of one modality: graphs with ``Batch.from_data_list``, tensors padded on the right."""
        tensors = [x for items in per_sample for x in items]
        owner = torch.tensor([s for s, items in enumerate(per_sample) for _ in items], dtype=torch.long)
        if all(isinstance(x, Data) for x in tensors):
            nodes = torch.tensor([x.num_nodes for x in tensors], dtype=torch.long)
            return cls(Batch.from_data_list(tensors), nodes, owner, raw)
        if any(isinstance(x, Data) for x in tensors):
            raise TypeError("a modality's items must be all graphs or all tensors")
        longest = max(x.shape[-1] for x in tensors)
        inputs = torch.stack([F.pad(x, (0, longest - x.shape[-1])) for x in tensors])
        lengths = torch.tensor([x.shape[-1] for x in tensors], dtype=torch.long)
        return cls(inputs, lengths, owner, raw)


@dataclass
class MultimodalBatch:
    """Token ids, labels and modality slots of several samples plus their encoder inputs.

    Attributes:
        input_ids: ``(b, t)``; modality slots hold the pad id.
        labels: ``(b, t)``; ``-100`` where no loss is taken.
        token_modality: ``(b, t)``; 0 text, 1 audio, 2 image, 3 graph.
        position_ids: ``(b, t)``; restart at 0 for each sample.
        keys: The S sample keys, in order.
        items: Per modality, the encoder inputs of its items.
        attention_mask: ``(b, t)`` padded layout only.
        cu_seqlens: ``(S+1,)`` int32 cumulative sample lengths, packed layout only.
        max_seqlen: Longest sample.
        skipped: Bad samples the data stream skipped since the previous batch (``SkipCounter.as_dict``).
        langs: The S samples' language tags (``None`` where unknown; :meth:`pack` and :meth:`pad` fill them).
    """

    input_ids: Tensor
    labels: Tensor
    token_modality: Tensor
    position_ids: Tensor
    keys: list[str]
    items: dict[str, ModalityItems] = field(default_factory=dict)
    attention_mask: Tensor | None = None
    cu_seqlens: Tensor | None = None
    max_seqlen: int = 0
    skipped: dict[str, Any] = field(default_factory=dict)
    langs: list[str | None] = field(default_factory=list)

    @property
    def layout(self) -> Literal["packed", "padded"]:
        return "packed" if self.cu_seqlens is not None else "padded"

    @property
    def num_samples(self) -> int:
        return len(self.keys)

    def token_sample(self) -> Tensor:
        """``(b, t)`` index of the sample each token belongs to; -1 on padding."""
        if self.cu_seqlens is not None:
            lengths = self.cu_seqlens.diff().long()
            ids = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
            out = torch.full_like(self.input_ids, -1)
            out[0, : ids.numel()] = ids
            return out
        assert self.attention_mask is not None
        rows = torch.arange(self.input_ids.shape[0], device=self.input_ids.device)[:, None].expand_as(self.input_ids)
        return torch.where(self.attention_mask.bool(), rows, torch.full_like(rows, -1))

    def num_tokens(self) -> int:
        """Real (non-padding) tokens, modality slots included."""
        if self.cu_seqlens is not None:
            return int(self.cu_seqlens[-1])
        assert self.attention_mask is not None
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str) -> MultimodalBatch:
        def move(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device)

        return MultimodalBatch(
            input_ids=self.input_ids.to(device),
            labels=self.labels.to(device),
            token_modality=self.token_modality.to(device),
            position_ids=self.position_ids.to(device),
            keys=list(self.keys),
            items={m: it.to(device) for m, it in self.items.items()},
            attention_mask=move(self.attention_mask),
            cu_seqlens=move(self.cu_seqlens),
            max_seqlen=self.max_seqlen,
            skipped=self.skipped,
            langs=list(self.langs),
        )

    @classmethod
    def empty(cls) -> MultimodalBatch:
        """A batch of no samples (packed layout): what a one-pass stream that gave no batch ends with, to carry
        the skips it counted (:attr:`skipped`) to the trainer."""
        nothing = torch.zeros((1, 0), dtype=torch.long)
        return cls(
            nothing, nothing.clone(), nothing.clone(), nothing.clone(), [], cu_seqlens=torch.zeros(1, dtype=torch.int32)
        )

    @classmethod
    def pack(cls, samples: Sequence[Sample]) -> MultimodalBatch:
        """Concatenate samples into one row (the training layout)."""
        if not samples:
            raise ValueError("cannot build a batch from no samples")
        lengths = [len(s.chat) for s in samples]
        cat = _concat(samples)
        return cls(
            input_ids=cat["input_ids"][None],
            labels=cat["labels"][None],
            token_modality=cat["token_modality"][None],
            position_ids=torch.cat([torch.arange(n) for n in lengths])[None],
            keys=[s.key for s in samples],
            items=_collate_items(samples),
            cu_seqlens=torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32),
            max_seqlen=max(lengths),
            langs=[s.lang for s in samples],
        )

    @classmethod
    def pad(cls, samples: Sequence[Sample], pad_id: int, side: Literal["right", "left"] = "right") -> MultimodalBatch:
        """One sample per row, padded to the longest (``side="left"`` for generation)."""
        if not samples:
            raise ValueError("cannot build a batch from no samples")
        width = max(len(s.chat) for s in samples)

        def rows(name: str, fill: int) -> Tensor:
            out = torch.full((len(samples), width), fill, dtype=torch.long)
            for i, s in enumerate(samples):
                values = torch.tensor(getattr(s.chat, name), dtype=torch.long)
                if side == "right":
                    out[i, : len(values)] = values
                else:
                    out[i, width - len(values) :] = values
            return out

        mask = rows("input_ids", -1) != -1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return cls(
            input_ids=rows("input_ids", pad_id),
            labels=rows("labels", IGNORE_INDEX),
            token_modality=rows("token_modality", 0),
            position_ids=positions,
            keys=[s.key for s in samples],
            items=_collate_items(samples),
            attention_mask=mask.long(),
            max_seqlen=width,
            langs=[s.lang for s in samples],
        )


def _concat(samples: Sequence[Sample]) -> dict[str, Tensor]:
    return {
        name: torch.tensor([v for s in samples for v in getattr(s.chat, name)], dtype=torch.long)
        for name in ("input_ids", "labels", "token_modality")
    }


def _collate_items(samples: Sequence[Sample]) -> dict[str, ModalityItems]:
    modalities = sorted({m for s in samples for m, items in s.items.items() if items})
    raw = {m for s in samples for m in s.raw}
    return {m: ModalityItems.collate([s.items.get(m, []) for s in samples], m in raw) for m in modalities}
