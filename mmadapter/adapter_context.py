"""How adapters deep inside the LLM learn which token is which, without changing the LLM's forward signature.

:class:`MultimodalLM` binds a :class:`BatchTokens` (token modality, owning sample, the samples' modality
tokens) to the model's :class:`AdapterContext` around each decoder call, and a forward pre-hook on the
decoder records which window of positions the call covers: the whole batch in training; the prompt and then
one new position per row in cached generation; the prompt plus every token generated so far without a
cache. Positions past the batch are generated text of the row's last sample. Adapters read the window with
:meth:`AdapterContext.tokens` and check it against their own input's ``(b, t)``.

The window outlives the ``bind`` block until the next decoder call, so that activation checkpointing, which
re-runs decoder layers during backward, routes exactly as the forward did.

Shape letters: b rows, t positions of the call, S samples, M modality tokens of a sample, d LLM width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from mmadapter.sample_groups import SampleGroups

__all__ = ["AdapterContext", "BatchTokens"]

TEXT = 0


@dataclass
class BatchTokens:
    """Per-position facts of one decoder call.

    Attributes:
        modality: ``(b, t)`` 0 text, 1 audio, 2 image, 3 graph.
        sample: ``(b, t)`` index of the owning sample; -1 on padding.
        num_samples: S.
        memory: ``(S, M, d)`` each sample's modality tokens (projected), zero-padded; ``None`` if unused.
        memory_mask: ``(S, M)`` True on real memory tokens.
        langs: The S samples' ``lang`` (``None`` where unknown); empty: none known.
    """

    modality: Tensor
    sample: Tensor
    num_samples: int
    memory: Tensor | None = None
    memory_mask: Tensor | None = None
    langs: tuple[str | None, ...] = ()
    _groups: SampleGroups | None = field(default=None, init=False, repr=False)
    _per_language: dict[object, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.langs and len(self.langs) != self.num_samples:
            raise ValueError(f"{len(self.langs)} sample languages for {self.num_samples} samples")

    def per_language(self, key: object, index_of: Callable[[str | None], int]) -> Tensor:
        """``(b, t)`` ``index_of(lang)`` of each position's sample, -1 on padding (and where ``index_of`` says
        -1); computed once per window for each ``key`` (every layer of one adapter kind asks the same)."""
        out = self._per_language.get(key)
        if out is None:
            langs = self.langs or (None,) * self.num_samples
            per_sample = [index_of(lang) for lang in langs] + [-1]  # the last one: padding's sample, -1
            out = torch.tensor(per_sample, device=self.sample.device)[self.sample]
            self._per_language[key] = out
        return out

    def groups(self) -> SampleGroups:
        """The positions regrouped by sample (built once per window)."""
        if self._groups is None:
            self._groups = SampleGroups(self.sample, self.num_samples)
        return self._groups

    def window(self, offset: int, length: int, rows: int | None = None) -> BatchTokens:
        """Positions ``[offset, offset + length)``; those past the batch are text of the row's last sample.

        ``rows``: the call's rows when generation expanded each row into several (beams, ``num_return_sequences``:
        consecutive copies, as Hugging Face expands them).
        """
        b, t = self.modality.shape
        rows = b if rows is None else rows
        if offset == 0 and length == t and rows == b:
            return self
        if rows % b:
            raise RuntimeError(f"a decoder call over {rows} rows cannot come from a batch of {b}")
        modality, sample = self.modality.repeat_interleave(rows // b, 0), self.sample.repeat_interleave(rows // b, 0)
        extra = max(0, offset + length - t)
        if extra:
            modality = torch.cat([modality, modality.new_full((modality.shape[0], extra), TEXT)], 1)
            sample = torch.cat([sample, sample[:, -1:].expand(-1, extra)], 1)
        return replace(self, modality=modality[:, offset : offset + length], sample=sample[:, offset : offset + length])

    def pooled_memory(self) -> Tensor | None:
        """``(S, d)`` mean of each sample's modality tokens (zeros for a sample without any)."""
        if self.memory is None or self.memory_mask is None:
            return None
        mask = self.memory_mask[..., None].to(self.memory.dtype)
        return (self.memory * mask).sum(1) / mask.sum(1).clamp(min=1)


class AdapterContext:
    """Shared by every adapter of one model; see the module docstring."""

    def __init__(self) -> None:
        self._bound: BatchTokens | None = None
        self._window: BatchTokens | None = None
        self._aux: dict[str, list[Tensor]] = {}

    @contextmanager
    def bind(self, tokens: BatchTokens | None) -> Iterator[dict[str, list[Tensor]]]:
        """Make ``tokens`` visible to the adapters for the decoder calls inside the block.

        Yields the auxiliary losses the adapters record during those calls (name → one tensor per layer).
        """
        self._bound, self._aux = tokens, {}
        try:
            yield self._aux
        finally:
            self._bound = None

    def window_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook of the decoder (``with_kwargs=True``): records the window of this call."""
        if self._bound is None:
            self._window = None
            return
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        if x is None:
            raise RuntimeError("the decoder was called without input_ids or inputs_embeds")
        # transformers ≤ 5.23 names the decoder's cache argument ``past_key_values``; 5.24 renamed it ``cache``.
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        offset = cache.get_seq_length() if cache is not None else 0
        self._window = self._bound.window(int(offset), x.shape[1], x.shape[0])

    def tokens(self, lead: torch.Size | tuple[int, ...]) -> BatchTokens | None:
        """The current window for an adapter whose input has leading shape ``lead == (b, t)``.

        ``None`` when no batch is bound (a plain call of the LLM: every token is text, no modality memory).

        Raises:
            RuntimeError: a batch is bound but ``lead`` is not the window's ``(b, t)``.
        """
        w = self._window
        if w is None:
            return None
        if tuple(lead) != tuple(w.modality.shape):
            raise RuntimeError(
                f"an adapter saw input positions of shape {tuple(lead)} but the decoder call covers "
                f"{tuple(w.modality.shape)}; adapters must wrap layers that see (rows, positions, features)"
            )
        return w

    def add_aux(self, name: str, value: Tensor) -> None:
        """Record an auxiliary loss of one layer (read by :meth:`bind`'s caller)."""
        if self._bound is not None:
            self._aux.setdefault(name, []).append(value)
