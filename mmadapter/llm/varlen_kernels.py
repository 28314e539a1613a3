"""Attention kernels over the ragged layout: sequences flattened to ``(n, h, d)`` with cumulative offsets.

Every kernel has the signature ``run(q (n, h, d), k (n, g, d), v (n, g, d), layout, options) -> (n, h, d)``:

- :func:`run_varlen`: ``torch.nn.attention.varlen.varlen_attn`` (PyTorch ≥ 2.10, CUDA), FlashAttention 2 kernels
  shipped in PyTorch;
- :func:`run_flash_attn`: flash-attn 2's ``flash_attn_varlen_func`` (CUDA);
- :func:`run_flex`: ``flex_attention`` with a document mask built once per layout (compiled on CUDA; eager on CPU,
  forward only — PyTorch has no flex backward on CPU);
- :func:`run_padded_sdpa`: ``F.scaled_dot_product_attention`` over the sequences padded to the longest one, so
  the work is ``s · max²`` rather than the ``n²`` of a dense mask over a packed row; any device, with autograd
  (the default on CPU);
- :func:`run_reference`: plain PyTorch in float32, one sequence at a time; any device, with autograd.

As in FlashAttention 2, a causal mask is aligned to the bottom right when a sequence has fewer queries than keys
(decoding with a cache): query ``i`` of ``lq`` sees key ``j`` of ``lk`` when ``j <= i + lk - lq``.

Shape letters: n tokens of the ragged layout, h query heads, g key/value heads, d head dim, s sequences.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "KERNELS",
    "AttentionOptions",
    "KernelInfo",
    "LatestCache",
    "RaggedLayout",
    "run_flash_attn",
    "run_flex",
    "run_padded_sdpa",
    "run_reference",
    "run_varlen",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Kernel = Callable[[Tensor, Tensor, Tensor, "RaggedLayout", "AttentionOptions"], Tensor]


@dataclass(frozen=True)
class AttentionOptions:
    """What one attention call computes, in transformers' conventions.

    Attributes:
        causal: Queries see only keys at or before their own position (bottom-right aligned).
        window: Sliding window in tokens, the query's own included; ``None`` for no window.
        scale: Softmax scale; ``None`` for ``1/sqrt(d)``.
        softcap: Logit soft-capping (``softcap * tanh(score / softcap)``); ``None`` for none.
        dropout: Attention dropout probability.
    """

    causal: bool = True
    window: int | None = None
    scale: float | None = None
    softcap: float | None = None
    dropout: float = 0.0

    def window_size(self) -> tuple[int, int]:
        """FlashAttention's inclusive ``(left, right)`` window: ``(-1, 0)`` is causal, ``(-1, -1)`` full."""
        left = -1 if self.window is None else self.window - 1
        return (left, 0 if self.causal else left)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: flex block masks are cached per layout
class RaggedLayout:
    """Where the s sequences of one attention call lie once flattened.

    Attributes:
        cu_q: ``(s+1,)`` int32 offsets of each sequence's queries.
        cu_k: ``(s+1,)`` int32 offsets of each sequence's keys.
        max_q: Longest query sequence.
        max_k: Longest key sequence.
        index_q: ``(n,)`` positions of the kept queries in the flattened ``(b * tq)`` batch; ``None`` keeps all.
        index_k: ``(n,)`` positions of the kept keys in the flattened ``(b * tk)`` batch; ``None`` keeps all.
    """

    cu_q: Tensor
    cu_k: Tensor
    max_q: int
    max_k: int
    index_q: Tensor | None = None
    index_k: Tensor | None = None


class LatestCache:
    """Values derived from one object, kept while it is the latest seen.

    Every layer of a forward gets the same ``cu_seq_lens_q``, padding mask and ``position_ids`` objects, so what
    is derived from them is computed once per forward. Holding a reference keeps ``is`` from matching a new
    object at a recycled address.
    """

    def __init__(self) -> None:
        self._source: object = None
        self._values: dict[Hashable, Any] = {}

    def get(self, source: object, key: Hashable, make: Callable[[], T]) -> T:
        if source is not self._source:
            self._source, self._values = source, {}
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]


_BLOCK_MASKS = LatestCache()
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object, logger: logging.Logger = log) -> None:
    """Log a warning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _half(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """FlashAttention kernels take fp16/bf16 only: other inputs run in the autocast dtype, else bf16."""
    if q.dtype in (torch.float16, torch.bfloat16):
        return q, k, v
    target = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
    warn_once("half", "attention inputs are %s; the FlashAttention kernel runs them in %s", q.dtype, target)
    return q.to(target), k.to(target), v.to(target)


def _unsupported(kernel: str, opts: AttentionOptions, *, dropout: bool, softcap: bool) -> None:
    for feature, wanted, supported in (("dropout", opts.dropout > 0, dropout), ("softcap", opts.softcap, softcap)):
        if wanted and not supported:
            raise ValueError(
                f"the {kernel} attention kernel has no {feature}, which this model's attention asks for; "
                "set model.llm.attn to another backend (eager supports everything)"
            )


@cache
def _parameters(fn: Callable[..., Any]) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def run_varlen(q: Tensor, k: Tensor, v: Tensor, layout: RaggedLayout, opts: AttentionOptions) -> Tensor:
    """``torch.nn.attention.varlen.varlen_attn``; its signature changed from 2.10 to 2.12, so it is inspected."""
    from torch.nn.attention import varlen

    _unsupported("varlen", opts, dropout=False, softcap=False)
    params = _parameters(varlen.varlen_attn)
    dtype = q.dtype
    q, k, v = _half(q, k, v)
    kwargs: dict[str, Any] = {"scale": opts.scale}
    if "window_size" in params:  # ≥ 2.11: causal is window_size == (-1, 0), compared as a tuple
        kwargs["window_size"] = opts.window_size()
    elif opts.window is not None:
        raise ValueError(f"torch {torch.__version__} varlen_attn has no sliding window; use model.llm.attn=flex")
    else:
        kwargs["is_causal"] = opts.causal
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:  # ≥ 2.12
            kwargs["enable_gqa"] = True
        else:
            k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    out = varlen.varlen_attn(q, k, v, layout.cu_q, layout.cu_k, layout.max_q, layout.max_k, **kwargs)
    return out.to(dtype)


def run_flash_attn(q: Tensor, k: Tensor, v: Tensor, layout: RaggedLayout, opts: AttentionOptions) -> Tensor:
    """flash-attn 2's ``flash_attn_varlen_func`` (GQA native: fewer key/value heads)."""
    from flash_attn import flash_attn_varlen_func

    dtype = q.dtype
    q, k, v = _half(q, k, v)
    out = flash_attn_varlen_func(
        q,
        k,
        v,
        layout.cu_q,
        layout.cu_k,
        layout.max_q,
        layout.max_k,
        dropout_p=opts.dropout,
        softmax_scale=opts.scale,
        causal=opts.causal,
        window_size=opts.window_size(),
        softcap=opts.softcap or 0.0,
    )
    return out.to(dtype)


@cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _document_mask(layout: RaggedLayout, opts: AttentionOptions, nq: int, nk: int, device: torch.device) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    def owner(cu: Tensor, n: int) -> Tensor:
        return torch.searchsorted(cu[1:], torch.arange(n, dtype=cu.dtype, device=device), right=True)

    seq_q, seq_k = owner(layout.cu_q, nq), owner(layout.cu_k, nk)
    shift = layout.cu_k.diff() - layout.cu_q.diff()  # bottom-right alignment when a sequence has fewer queries
    pos_q = torch.arange(nq, device=device) - layout.cu_q[seq_q] + shift[seq_q]
    pos_k = torch.arange(nk, device=device) - layout.cu_k[seq_k]

    def mask_mod(batch: Tensor, head: Tensor, iq: Tensor, ik: Tensor) -> Tensor:
        keep = seq_q[iq] == seq_k[ik]
        ahead = pos_q[iq] - pos_k[ik]
        if opts.causal:
            keep = keep & (ahead >= 0)
        if opts.window is not None:
            keep = keep & (ahead < opts.window) & (-ahead < opts.window)
        return keep

    return create_block_mask(mask_mod, None, None, nq, nk, device=device, _compile=device.type == "cuda")


def run_flex(q: Tensor, k: Tensor, v: Tensor, layout: RaggedLayout, opts: AttentionOptions) -> Tensor:
    """``flex_attention`` with a document mask, built once per layout and reused by every layer."""
    from torch.nn.attention.flex_attention import flex_attention

    _unsupported("flex", opts, dropout=False, softcap=True)
    key = (opts.causal, opts.window)
    block_mask = _BLOCK_MASKS.get(layout, key, lambda: _document_mask(layout, opts, q.shape[0], k.shape[0], q.device))
    cap = opts.softcap

    def softcap(score: Tensor, batch: Tensor, head: Tensor, iq: Tensor, ik: Tensor) -> Tensor:
        assert cap is not None
        return cap * torch.tanh(score / cap)

    groups = q.shape[1] // k.shape[1]
    if groups & (groups - 1):  # flex's decoding kernel (short queries) shares kv heads in power-of-2 groups only
        k, v = (x.repeat_interleave(groups, dim=1) for x in (k, v))
    qf, kf, vf = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, h, n, d)
    kwargs: dict[str, Any] = {"block_mask": block_mask, "scale": opts.scale, "enable_gqa": kf.shape[1] != qf.shape[1]}
    if cap:
        kwargs["score_mod"] = softcap
    if q.is_cuda:
        out = _compiled_flex()(qf, kf, vf, **kwargs)
    else:  # CPU: the unfused reference path (the fused one needs compiling, and neither has a backward on CPU)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            out = flex_attention(qf, kf, vf, **kwargs)
    return out[0].transpose(0, 1)


def _padded_index(cu: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """For each of the ``n`` ragged tokens: its sequence and its position in that sequence."""
    lengths = cu.diff().long()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), lengths, output_size=n)
    return seq, torch.arange(n, device=cu.device) - cu[:-1].long()[seq]


def run_padded_sdpa(q: Tensor, k: Tensor, v: Tensor, layout: RaggedLayout, opts: AttentionOptions) -> Tensor:
    """``F.scaled_dot_product_attention`` on ``(s, h, max, d)``: each sequence padded at its end to the longest.

    Where every sequence has as many queries as keys (training, prefill), causal attention needs no mask: a real
    query never reaches the padding after it. Otherwise (decoding with a cache) a boolean mask keeps each query's
    bottom-right aligned keys. Sliding windows and soft-capping run :func:`run_reference` instead.
    """
    if opts.window is not None or opts.softcap:
        warn_once("padded_sdpa", "padded SDPA has no sliding window or soft-capping: using the PyTorch reference")
        return run_reference(q, k, v, layout, opts)
    s, h, d = layout.cu_q.numel() - 1, q.shape[1], q.shape[2]
    if s == 0:
        return q.new_zeros(q.shape[0], h, v.shape[-1])
    seq_q, pos_q = _padded_index(layout.cu_q, q.shape[0])
    seq_k, pos_k = _padded_index(layout.cu_k, k.shape[0])
    if k.shape[1] != h:
        k, v = (x.repeat_interleave(h // x.shape[1], dim=1) for x in (k, v))
    qp = q.new_zeros(s, layout.max_q, h, d).index_put((seq_q, pos_q), q)
    kp = k.new_zeros(s, layout.max_k, h, d).index_put((seq_k, pos_k), k)
    vp = v.new_zeros(s, layout.max_k, h, v.shape[-1]).index_put((seq_k, pos_k), v)
    len_q, len_k = layout.cu_q.diff(), layout.cu_k.diff()
    mask, causal = None, opts.causal
    if not (opts.causal and layout.max_q == layout.max_k and torch.equal(len_q, len_k)):
        iq = torch.arange(layout.max_q, device=q.device)[None, :, None]  # (1, tq, 1)
        ik = torch.arange(layout.max_k, device=q.device)[None, None, :]  # (1, 1, tk)
        mask = ik < len_k[:, None, None]  # (s, tq, tk)
        if opts.causal:
            mask = mask & (ik <= iq + (len_k - len_q)[:, None, None])
        # Every real query already sees key 0; so must padding rows (of an empty sequence too), or they turn NaN.
        mask, causal = (mask | (ik == 0))[:, None], False  # (s, 1, tq, tk)
    out = F.scaled_dot_product_attention(
        qp.transpose(1, 2),
        kp.transpose(1, 2),
        vp.transpose(1, 2),
        attn_mask=mask,
        dropout_p=opts.dropout,
        is_causal=causal,
        scale=opts.scale,
    )  # (s, h, max_q, d)
    return out.transpose(1, 2)[seq_q, pos_q]


def run_reference(q: Tensor, k: Tensor, v: Tensor, layout: RaggedLayout, opts: AttentionOptions) -> Tensor:
    """Plain PyTorch in float32, one sequence at a time (reads the offsets to the host): any device, autograd."""
    groups = q.shape[1] // k.shape[1]
    scale = opts.scale if opts.scale is not None else q.shape[-1] ** -0.5
    outs = []
    for a, b, c, e in zip(*_bounds(layout.cu_q), *_bounds(layout.cu_k), strict=True):
        qs = q[a:b].transpose(0, 1).float()  # (h, lq, d)
        ks, vs = (x[c:e].transpose(0, 1).float().repeat_interleave(groups, 0) for x in (k, v))  # (h, lk, d)
        scores = qs @ ks.transpose(1, 2) * scale  # (h, lq, lk)
        if opts.softcap:
            scores = opts.softcap * torch.tanh(scores / opts.softcap)
        ahead = torch.arange(b - a, device=q.device)[:, None] + (e - c) - (b - a) - torch.arange(e - c, device=q.device)
        keep = torch.ones_like(ahead, dtype=torch.bool)
        if opts.causal:
            keep &= ahead >= 0
        if opts.window is not None:
            keep &= (ahead < opts.window) & (-ahead < opts.window)
        probs = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(-1) * keep.any(-1, keepdim=True)
        probs = F.dropout(probs, opts.dropout) if opts.dropout > 0 else probs
        outs.append((probs @ vs).transpose(0, 1))
    if not outs:
        return q.new_zeros(q.shape[0], q.shape[1], v.shape[-1])
    return torch.cat(outs).to(q.dtype)


def _bounds(cu: Tensor) -> tuple[list[int], list[int]]:
    return cu[:-1].tolist(), cu[1:].tolist()


@dataclass(frozen=True)
class KernelInfo:
    """A kernel and whether it runs on CUDA tensors only (others then go to :func:`run_reference`)."""

    run: Kernel
    cuda_only: bool


KERNELS: dict[str, KernelInfo] = {
    "varlen": KernelInfo(run_varlen, cuda_only=True),
    "flash_attn": KernelInfo(run_flash_attn, cuda_only=True),
    "flex": KernelInfo(run_flex, cuda_only=False),
    "sdpa_varlen": KernelInfo(run_padded_sdpa, cuda_only=False),
    "reference": KernelInfo(run_reference, cuda_only=False),
}
