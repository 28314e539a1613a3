"""LLaMA-Adapter's zero-init gated prompt branch for one self-attention layer (arXiv 2303.16199).

For each query head h, with ``q`` the layer's own queries (after its q-norm, if any, and rotary), ``P`` the
K learned prompts of the layer (plus, when conditioned, the sample's shift ``c_s``) and the layer's frozen
key/value projections::

    K_p = k_proj(P),  V_p = v_proj(P)                 # no rotary: prompts have no position
    out_h = tanh(g_h) · softmax(q_h K_pᵀ · scaling) V_p

``out`` is added to the attention output before ``o_proj``, as in the LLaMA-Adapter V2 code (a separate
softmax branch added after the text attention), which lets the text attention stay one fused kernel call.
Grouped-query attention: each key/value head serves its group of query heads, as in the main attention.

Shape letters: b rows, t positions, H query heads, G key/value heads, c head width, K prompts, d LLM width,
S samples, L longest sample.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmadapter.fusion.tanh_gate import TanhGate
from mmadapter.lora.molora import MoLoRALinear
from mmadapter.sample_groups import SampleGroups

__all__ = ["PromptAttention", "frozen_linear"]


def frozen_linear(module: nn.Module, x: Tensor) -> Tensor:
    """``x`` through the frozen weights of ``module`` only (no LoRA experts, no hooks)."""
    base = module.base_layer if isinstance(module, MoLoRALinear) else module
    if not isinstance(base, nn.Linear):
        raise TypeError(f"expected a linear layer, got {type(base).__name__}")
    return F.linear(x.to(base.weight.dtype), base.weight, base.bias)


class PromptAttention(nn.Module):
    """K learned prompts and one ``tanh`` gate per query head, g = 0 at init.

    Args:
        dim: LLM width d.
        num_heads: Query heads H.
        prompt_len: K.
    """

    def __init__(self, dim: int, num_heads: int, prompt_len: int) -> None:
        super().__init__()
        # N(0, 1) like LLaMA-Adapter's nn.Embedding prompts: the scale of a normed hidden state.
        self.prompt = nn.Parameter(torch.randn(prompt_len, dim))
        self.gate = TanhGate(num_heads, dim=-2)

    def forward(
        self, attn: nn.Module, query: Tensor, shift: Tensor | None = None, groups: SampleGroups | None = None
    ) -> Tensor:
        """The gated branch ``(b, t, H·c)`` to add to the attention output before ``o_proj``.

        Args:
            attn: The layer's attention module (``k_proj``, ``v_proj``, ``head_dim``, optional ``k_norm``).
            query: ``(b, H, t, c)`` its queries, exactly as they enter its attention.
            shift: ``(S, d)`` per-sample prompt shift (conditioned prompts), with ``groups``.
            groups: Where each position's sample is, needed with ``shift``.
        """
        H, c = query.shape[1], query.shape[-1]
        prompts = self.prompt if shift is None else self.prompt + shift[:, None].to(self.prompt.dtype)  # (…, K, d)
        keys = self._heads(attn, frozen_linear(attn.k_proj, prompts), c, H, getattr(attn, "k_norm", None))
        values = self._heads(attn, frozen_linear(attn.v_proj, prompts), c, H, None)  # (…, H, K, c)
        scaling = getattr(attn, "scaling", c**-0.5)
        if shift is None:
            out = self._attend(query.float(), keys, values, scaling).transpose(1, 2)  # (b, t, H, c)
        else:
            assert groups is not None
            q = groups.gather(query.transpose(1, 2)).transpose(1, 2)  # (S, H, L, c)
            out = groups.scatter(self._attend(q.float(), keys, values, scaling).transpose(1, 2))  # (b, t, H, c)
        return self.gate(out).flatten(-2).to(query.dtype)

    @staticmethod
    def _heads(attn: nn.Module, x: Tensor, c: int, H: int, norm: nn.Module | None) -> Tensor:
        """``(…, K, G·c) → (…, H, K, c)`` in fp32, repeating each key/value head over its query group."""
        x = x.unflatten(-1, (-1, c))  # (…, K, G, c)
        if norm is not None:
            x = norm(x)
        x = x.transpose(-2, -3).float()  # (…, G, K, c)
        return x.repeat_interleave(H // x.shape[-3], dim=-3)

    @staticmethod
    def _attend(q: Tensor, keys: Tensor, values: Tensor, scaling: float) -> Tensor:
        """``softmax(q Kᵀ · scaling) V``: q ``(n, H, l, c)``, keys/values ``(H, K, c)`` or ``(n, H, K, c)``."""
        scores = torch.matmul(q, keys.transpose(-1, -2)) * scaling  # (n, H, l, K)
        return torch.matmul(scores.softmax(-1), values)  # (n, H, l, c)
