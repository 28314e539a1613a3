"""Greedy decoding without a KV cache: every position recomputed at every step. Slow; the reference that cached
generation (with adapters that must know which positions a call covers) is checked against.

Shape letters: b rows, t positions, d LLM width, n new tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel

__all__ = ["greedy_without_cache"]


def greedy_without_cache(
    llm: PreTrainedModel,
    embeds: Tensor,
    mask: Tensor,
    eos: int | list[int],
    pad_id: int,
    max_new_tokens: int,
    **options: Any,
) -> Tensor:
    """``(b, n)`` new token ids after the left-padded prompt ``embeds`` ``(b, t, d)`` with ``mask`` ``(b, t)``;
    a row that produced an end token is padded with ``pad_id`` after it.

    Raises:
        ValueError: ``options`` ask for anything but greedy decoding.
    """
    if options.get("do_sample") or options.get("num_beams", 1) > 1 or set(options) - {"do_sample", "num_beams"}:
        raise ValueError(f"use_cache=False supports greedy decoding only, got options {options}")
    ends = torch.tensor(eos if isinstance(eos, list) else [eos], device=embeds.device)
    table = llm.get_input_embeddings()
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    out = []
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).logits
        token = logits[:, -1].argmax(-1).masked_fill(done, pad_id)
        out.append(token)
        done |= torch.isin(token, ends)
        if done.all():
            break
        embeds = torch.cat([embeds, table(token)[:, None].to(embeds.dtype)], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
    return torch.stack(out, 1)
