"""transformers attention functions that run packed (ragged) sequences through :mod:`varlen_kernels`.

transformers calls an attention function as ``fn(module, query, key, value, attention_mask, **kwargs)`` with
``(b, h, t, d)`` tensors and expects ``(b, t, h, d)`` back. :func:`attention_function` flattens each call to the
ragged layout and runs a kernel of :data:`mmadapter.llm.varlen_kernels.KERNELS` on it; a CUDA-only kernel given
tensors elsewhere runs the PyTorch reference instead (logged once).

Where the sequences lie comes, in this order, from ``cu_seq_lens_q/k`` and ``max_length_q/k`` passed to the
decoder (packed rows, see :func:`mmadapter.llm.attention.packed_kwargs`); from the 2-D padding mask that
transformers' ``flash_attention_mask`` hands over (padded rows, generation with a cache); from the restarts of
``position_ids`` in a single row (a packed row whose offsets were not passed: one device sync per forward, logged
once); else every row is one sequence. Every layer of a forward gets the same offsets, mask and ``position_ids``
objects, so the layout (and flex's block mask) is computed once per forward: it is cached on their identity.

Shape letters: b rows, t tokens per row (tq queries, tk keys), h query heads, d head dim, n tokens of the
ragged layout, s sequences.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from mmadapter.llm.varlen_kernels import KERNELS, AttentionOptions, LatestCache, RaggedLayout, run_reference, warn_once

__all__ = ["attention_function", "ragged_layout"]

log = logging.getLogger(__name__)

_LAYOUTS = LatestCache()


def ragged_layout(
    b: int,
    tq: int,
    tk: int,
    device: torch.device,
    attention_mask: Tensor | None = None,
    cu_seq_lens_q: Tensor | None = None,
    cu_seq_lens_k: Tensor | None = None,
    max_length_q: int | Tensor | None = None,
    max_length_k: int | Tensor | None = None,
    position_ids: Tensor | None = None,
) -> RaggedLayout:
    """The ragged layout of one attention call (see the module docstring for the order of sources).

    Args:
        b: Rows.
        tq: Queries per row.
        tk: Keys per row (``> tq`` when decoding with a cache).
        device: Where the offsets live.
        attention_mask: ``(b, tk)`` bool padding mask (True = real token), or ``None``.
        cu_seq_lens_q: ``(s+1,)`` query offsets over the flattened ``(b * tq)`` tokens.
        cu_seq_lens_k: ``(s+1,)`` key offsets; defaults to ``cu_seq_lens_q``.
        max_length_q: Longest query sequence; computed from the offsets when missing.
        max_length_k: Longest key sequence; defaults to ``max_length_q``.
        position_ids: ``(1, tq)`` positions; a single row restarting at 0 is split at each restart.
    """
    if cu_seq_lens_q is not None:
        return _LAYOUTS.get(
            cu_seq_lens_q,
            ("cu", id(cu_seq_lens_k)),
            lambda: _from_offsets(cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, device),
        )
    if attention_mask is not None:
        return _LAYOUTS.get(attention_mask, ("mask", tq, tk), lambda: _from_padding(attention_mask, tq, tk))
    if position_ids is not None and b == 1 and tq == tk > 1 and position_ids.numel() == tq:
        found = _LAYOUTS.get(position_ids, ("positions", tq), lambda: _from_positions(position_ids))
        if found is not None:
            return found
    return _uniform(b, tq, tk, device)


def _from_offsets(
    cu_q: Tensor, cu_k: Tensor | None, max_q: int | Tensor | None, max_k: int | Tensor | None, device: torch.device
) -> RaggedLayout:
    cu_q = cu_q.to(device=device, dtype=torch.int32)
    cu_k = cu_q if cu_k is None else cu_k.to(device=device, dtype=torch.int32)
    # The kernels take Python ints; a tensor here (e.g. from DataCollatorWithFlattening) costs one sync.
    q = int(cu_q.diff().max()) if max_q is None else int(max_q)
    if max_k is None:
        max_k = q if cu_k is cu_q else cu_k.diff().max()
    return RaggedLayout(cu_q, cu_k, q, int(max_k))


def _lengths(mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """Offsets, flat indices of the True entries and the longest row of a ``(b, t)`` bool mask."""
    lengths = mask.sum(-1, dtype=torch.int32)
    index = mask.flatten().nonzero().flatten()
    return F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)), index, int(lengths.max())


def _from_padding(mask: Tensor, tq: int, tk: int) -> RaggedLayout:
    mask = mask.bool()[:, -tk:]
    mask_k = F.pad(mask, (0, tk - mask.shape[1]), value=False)  # a longer static cache holds no real keys past it
    cu_k, index_k, max_k = _lengths(mask_k)
    if tq == tk:
        return RaggedLayout(cu_k, cu_k, max_k, max_k, index_k, index_k)
    # Queries are the last tq positions of the mask (left padding, as in transformers' flash path).
    cu_q, index_q, max_q = _lengths(mask[:, -tq:])
    return RaggedLayout(cu_q, cu_k, max_q, max_k, index_q, index_k)


def _from_positions(position_ids: Tensor) -> RaggedLayout | None:
    positions = position_ids.reshape(-1)
    starts = (positions.diff() != 1).nonzero().flatten() + 1
    if starts.numel() == 0:
        return None
    warn_once(
        "positions",
        "a packed row reached attention without cu_seq_lens_q/k: sequence boundaries are taken from restarting "
        "position_ids (one device sync per forward); pass mmadapter.llm.attention.packed_kwargs(batch, backend)",
        logger=log,
    )
    total = torch.tensor([0, positions.numel()], dtype=torch.int32, device=positions.device)
    cu = torch.cat([total[:1], starts.to(torch.int32), total[1:]])
    longest = int(cu.diff().max())
    return RaggedLayout(cu, cu, longest, longest)


@lru_cache(maxsize=16)
def _uniform(b: int, tq: int, tk: int, device: torch.device) -> RaggedLayout:
    rows = torch.arange(b + 1, dtype=torch.int32, device=device)
    cu_q = rows * tq
    return RaggedLayout(cu_q, cu_q if tq == tk else rows * tk, tq, tk)


def _flatten(x: Tensor, index: Tensor | None) -> Tensor:
    """``(b, h, t, d)`` → ``(n, h, d)``."""
    x = x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3])
    return x if index is None else x[index]


def _unflatten(out: Tensor, index: Tensor | None, b: int, tq: int) -> Tensor:
    """``(n, h, d)`` → ``(b, tq, h, d)``; dropped (padding) queries get zeros."""
    if index is not None:
        out = out.new_zeros(b * tq, *out.shape[1:]).index_copy(0, index, out)
    return out.reshape(b, tq, *out.shape[1:])


def attention_function(kernel: str) -> Callable[..., tuple[Tensor, None]]:
    """An ``AttentionInterface`` function running ``kernel`` (a key of :data:`KERNELS`) on the ragged layout.

    Register it together with transformers' ``flash_attention_mask`` as the mask function, so that the decoder
    hands over ``None`` or a 2-D padding mask and never builds a dense ``(t, t)`` one.
    """
    info = KERNELS[kernel]

    def attention(
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        sliding_window: int | None = None,
        softcap: float | None = None,
        is_causal: bool | None = None,
        s_aux: Tensor | None = None,
        cu_seq_lens_q: Tensor | None = None,
        cu_seq_lens_k: Tensor | None = None,
        max_length_q: int | Tensor | None = None,
        max_length_k: int | Tensor | None = None,
        position_ids: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        if s_aux is not None:
            raise ValueError(f"the {kernel} attention kernel has no attention sinks (s_aux); use model.llm.attn=eager")
        if attention_mask is not None and (not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2):
            raise ValueError(
                f"the {kernel} attention function takes a 2-D padding mask or None, got {type(attention_mask).__name__}"
                f"{tuple(getattr(attention_mask, 'shape', ()))}: register it with transformers' flash_attention_mask"
            )
        b, _, tq, _ = query.shape
        layout = ragged_layout(
            b,
            tq,
            key.shape[2],
            query.device,
            attention_mask,
            cu_seq_lens_q=cu_seq_lens_q,
            cu_seq_lens_k=cu_seq_lens_k,
            max_length_q=max_length_q,
            max_length_k=max_length_k,
            position_ids=position_ids,
        )
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        opts = AttentionOptions(causal, sliding_window, scaling, softcap, dropout)
        run = info.run
        if info.cuda_only and not query.is_cuda:
            warn_once(
                kernel,
                "%s attention got %s tensors: using the PyTorch reference",
                kernel,
                query.device.type,
                logger=log,
            )
            run = run_reference
        q, k, v = _flatten(query, layout.index_q), _flatten(key, layout.index_k), _flatten(value, layout.index_k)
        out = run(q, k, v, layout, opts)
        return _unflatten(out, layout.index_q, b, tq), None

    attention.__name__ = f"{kernel}_attention"
    return attention
