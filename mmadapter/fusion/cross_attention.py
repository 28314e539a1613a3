"""Flamingo's gated cross-attention block, placed before a frozen decoder layer (arXiv 2204.14198).

``x ← x + tanh(g_attn) · XAttn(norm(x), m_s)``, then ``x ← x + tanh(g_ff) · FFN(norm(x))``, gates 0 at init,
where ``m_s`` are the modality tokens of the position's own sample. As torchtune's skip mask does, both
updates are zeroed for positions whose sample has no modality tokens, so such a sample passes unchanged
(and no attention row is fully masked, so there is no NaN in the forward or backward pass).

Shape letters: b rows, t positions, d LLM width, S samples, L longest sample, M modality tokens of a sample,
H heads, c head width.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from mmadapter.adapter_context import BatchTokens
from mmadapter.fusion.tanh_gate import TanhGate

__all__ = ["GatedCrossAttentionBlock"]


class GatedCrossAttentionBlock(nn.Module):
    """Gated cross-attention + gated feed-forward, identity at init.

    Args:
        dim: LLM width d (the modality tokens have it too: they are projector outputs).
        num_heads: Attention heads H.
        ffn_mult: FFN hidden width in multiples of d (Flamingo: 4).
        eps: RMSNorm epsilon.
    """

    def __init__(self, dim: int, num_heads: int, ffn_mult: int = 4, eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attn_norm = nn.RMSNorm(dim, eps=eps)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.attn_gate = TanhGate()
        self.ffn_norm = nn.RMSNorm(dim, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.ffn_gate = TanhGate()

    def forward(self, x: Tensor, tokens: BatchTokens) -> Tensor:
        """``x (b, t, d)`` → ``(b, t, d)``, each position attending to its sample's ``tokens.memory``."""
        assert tokens.memory is not None and tokens.memory_mask is not None
        dtype = self.q_proj.weight.dtype
        groups = tokens.groups()
        has_memory = tokens.memory_mask.any(1)  # (S,)
        keep = groups.valid & has_memory[:, None]  # (S, L)
        # A sample without memory attends to its (zero) first slot; its output is then masked out.
        mask = tokens.memory_mask.clone()
        mask[:, 0] |= ~has_memory
        q = self._heads(self.q_proj(groups.gather(self.attn_norm(x.to(dtype)))))  # (S, H, L, c)
        memory = tokens.memory.to(dtype)
        k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))  # (S, H, M, c)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        out = self.o_proj(out.transpose(1, 2).flatten(-2)) * keep[..., None]  # (S, L, d)
        h = x + self.attn_gate(groups.scatter(out)).to(x.dtype)
        ffn = self.ffn(self.ffn_norm(h.to(dtype))) * groups.scatter(keep[..., None].to(dtype))
        return h + self.ffn_gate(ffn).to(x.dtype)

    def _heads(self, x: Tensor) -> Tensor:
        """``(n, l, d) → (n, H, l, c)``"""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
