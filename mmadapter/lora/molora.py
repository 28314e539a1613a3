"""Mixture-of-LoRA experts on a frozen linear layer, routed by token modality or by a learned router.

``y = W x + b + (alpha / r) · Σ_e w_e(x) · B_e A_e dropout(x)``: E experts of rank r, B zero-initialised
(the layer is exactly the frozen one at step 0), A initialised as PEFT does (Kaiming-uniform, a = √5).
The experts are one rank-(E·r) LoRA whose rank blocks are weighted per token, so all of them run in two
matrix products, never a loop over experts. Weights ``w``:

- ``modality``: one-hot, the expert of the token's modality (PILL's MoMAE / OneLLM style hard routing);
  each expert can be merged into a copy of the base weights (:meth:`MoLoRALinear.merge`). Language experts
  (``language_experts``) add one more expert with weight 1 to every token of a sample in their language:
  a LoRA for a new language that leaves samples of every other language as they were (bit for bit where the
  kernels round alike; the extra rank block changes the matrix sizes).
- ``soft``: ``softmax(router(x))`` over all experts (LoRAMoE).
- ``topk``: the ``top_k`` largest router probabilities, renormalised (MixLoRA); with ``top_k = 1`` the kept
  probability is used as is (Switch Transformer), since renormalising it to 1 would cut the router off from
  the task loss. Records the Switch load-balancing loss ``E · Σ_e f_e · P_e`` (f_e: share of the kept
  assignments that go to e, P_e: mean router probability of e; 1 for a uniform router) in the context.

Expert parameters are PEFT's layout with the expert as adapter name (``lora_A.<expert>.weight`` ``(r, d_in)``,
``lora_B.<expert>.weight`` ``(d_out, r)``), so each expert is a separate parameter (trainable group
``molora.<expert>``); :attr:`MoLoRALinear.lora_A` / ``lora_B`` stacks them to ``(E, r, d_in)`` / ``(E, d_out, r)``.

Shape letters: b rows, t positions, i input features, o output features, E experts, r rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmadapter.adapter_config import TOKEN_MODALITIES, MoLoRAConfig
from mmadapter.adapter_context import AdapterContext
from mmadapter.llm.layers import named_linears

__all__ = ["MoLoRALinear", "attach_molora", "balance_loss", "merge_molora"]

Routing = Literal["modality", "soft", "topk"]


class MoLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) plus E LoRA experts.

    Args:
        base_layer: The frozen layer; its weights are not copied.
        experts: Expert names (lowercase identifiers).
        rank: r of every expert.
        alpha: LoRA alpha; the update is scaled by ``alpha / rank``.
        dropout: Dropout on the experts' input.
        routing: ``modality``, ``soft`` or ``topk`` (see the module docstring).
        top_k: Experts kept per token with ``topk``.
        expert_of: Token modality name → expert name, for ``modality`` routing (default: same names).
        language_expert: A sample's ``lang`` → the expert its tokens use besides their modality's, or ``None``
            (``modality`` routing; :meth:`~mmadapter.adapter_config.MoLoRAConfig.language_expert`).
        context: Where the token modalities come from; without one every token is text.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        experts: Sequence[str],
        *,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        routing: Routing = "modality",
        top_k: int = 1,
        expert_of: Mapping[str, str] | None = None,
        language_expert: Callable[[str | None], str | None] | None = None,
        context: AdapterContext | None = None,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.experts = list(experts)
        self.rank, self.scaling, self.routing, self.top_k = rank, alpha / rank, routing, top_k
        self.context = context
        i, o = base_layer.in_features, base_layer.out_features
        w = base_layer.weight
        dtype = w.dtype if w.dtype.itemsize >= 4 else torch.float32  # train adapters in full precision
        kw = {"device": w.device, "dtype": dtype}
        self.lora_A = nn.ModuleDict({e: nn.Linear(i, rank, bias=False, **kw) for e in self.experts})
        self.lora_B = nn.ModuleDict({e: nn.Linear(rank, o, bias=False, **kw) for e in self.experts})
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.router = nn.Linear(i, len(self.experts), bias=False, **kw) if routing != "modality" else None
        if routing == "topk" and not 1 <= top_k <= len(self.experts):
            raise ValueError(f"top_k={top_k} must be between 1 and the {len(self.experts)} expert(s)")
        if routing == "modality":
            names = {m: m for m in TOKEN_MODALITIES if m in self.experts} | dict(expert_of or {})
            if "text" not in names:
                raise ValueError(f"modality routing needs an expert for text tokens; experts: {self.experts}")
            index = [self.experts.index(names.get(m, names["text"])) for m in TOKEN_MODALITIES]
            self.register_buffer("expert_index", torch.tensor(index, device=w.device), persistent=False)
        elif language_expert is not None:
            raise ValueError(f"language experts need modality routing, not {routing!r}")
        self.language_expert = language_expert
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A as PEFT (Kaiming-uniform, a = √5), B zero, router N(0, 0.02) (MixLoRA)."""
        for e in self.experts:
            nn.init.kaiming_uniform_(self.lora_A[e].weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[e].weight)
        if self.router is not None:
            nn.init.normal_(self.router.weight, std=0.02)

    @property
    def lora_A_stacked(self) -> Tensor:
        """``(E, r, i)``"""
        return torch.stack([self.lora_A[e].weight for e in self.experts])

    @property
    def lora_B_stacked(self) -> Tensor:
        """``(E, o, r)``"""
        return torch.stack([self.lora_B[e].weight for e in self.experts])

    def adapter_modules(self) -> list[nn.Module]:
        """Every module holding this layer's trainable adapter parameters (not the base layer)."""
        return [self.lora_A, self.lora_B] + ([self.router] if self.router is not None else [])

    def forward(self, x: Tensor) -> Tensor:
        """``x (b, t, i) → (b, t, o)``."""
        result = self.base_layer(x)
        weights = self.expert_weights(x)  # (b, t, E)
        E, r = len(self.experts), self.rank
        a = self.lora_A_stacked.reshape(E * r, -1)  # (E·r, i)
        b = self.lora_B_stacked.permute(1, 0, 2).reshape(-1, E * r)  # (o, E·r)
        h = F.linear(self.lora_dropout(x.to(a.dtype)), a)  # (b, t, E·r)
        h = (h.unflatten(-1, (E, r)) * weights[..., None].to(h.dtype)).flatten(-2)
        return result + (F.linear(h, b) * self.scaling).to(result.dtype)

    def expert_weights(self, x: Tensor) -> Tensor:
        """``(b, t, E)`` weight of each expert for each token."""
        tokens = self.context.tokens(x.shape[:-1]) if self.context is not None else None
        E = len(self.experts)
        if self.routing == "modality":
            modality = tokens.modality if tokens is not None else x.new_zeros(x.shape[:-1], dtype=torch.long)
            weights = F.one_hot(self.expert_index[modality.to(self.expert_index.device)], E)
            if self.language_expert is not None and tokens is not None:
                extra = tokens.per_language(("molora", *self.experts), self._language_index).to(weights.device)
                weights = weights + F.one_hot(extra.clamp(min=0), E) * (extra >= 0)[..., None]
            return weights.to(x.dtype)
        assert self.router is not None
        probs = torch.softmax(self.router(x.to(self.router.weight.dtype)).float(), dim=-1)  # (b, t, E)
        if self.routing == "soft":
            return probs
        top, idx = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            top = top / top.sum(-1, keepdim=True)
        if self.context is not None:
            valid = tokens.sample >= 0 if tokens is not None else None
            self.context.add_aux("balance_loss", balance_loss(probs, idx, E, valid))
        return torch.zeros_like(probs).scatter(-1, idx, top)

    def _language_index(self, lang: str | None) -> int:
        expert = self.language_expert(lang) if self.language_expert is not None else None
        return -1 if expert is None else self.experts.index(expert)

    @torch.no_grad()
    def merge(self, expert: str, lang: str | None = None) -> nn.Linear:
        """A plain ``nn.Linear`` equal to this layer when every token uses ``expert`` (``modality`` routing) and
        belongs to a sample in ``lang`` (so that ``lang``'s language expert, when it has one, is folded in too).

        Raises:
            ValueError: the routing is learned (soft / topk), or ``expert`` does not exist.
        """
        if self.routing != "modality":
            raise ValueError(f"only modality routing can be merged; this layer routes with {self.routing!r}")
        if expert not in self.experts:
            raise ValueError(f"unknown expert {expert!r}; experts: {self.experts}")
        base = self.base_layer
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        out.to(device=base.weight.device, dtype=base.weight.dtype)
        index = self._language_index(lang)
        delta = sum(
            self.lora_B[e].weight.float() @ self.lora_A[e].weight.float() * self.scaling
            for e in dict.fromkeys([expert, *([self.experts[index]] if index >= 0 else [])])
        )
        out.weight.copy_(base.weight.float() + delta)
        if base.bias is not None:
            out.bias.copy_(base.bias)
        return out.requires_grad_(base.weight.requires_grad)

    def extra_repr(self) -> str:
        return f"experts={self.experts}, rank={self.rank}, scaling={self.scaling:g}, routing={self.routing!r}"


def balance_loss(probs: Tensor, chosen: Tensor, num_experts: int, valid: Tensor | None = None) -> Tensor:
    """Switch-Transformer load balancing ``E · Σ_e f_e · P_e`` over the valid tokens.

    Args:
        probs: ``(b, t, E)`` router probabilities.
        chosen: ``(b, t, k)`` indices of the kept experts.
        num_experts: E.
        valid: ``(b, t)`` tokens to count (default all).

    Returns:
        A scalar, exactly 1 for a uniform router and up to ``E / k`` for one that always picks the same k.
    """
    probs, chosen = probs.flatten(0, -2), chosen.flatten(0, -2)
    if valid is not None:
        probs, chosen = probs[valid.flatten()], chosen[valid.flatten()]
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    counts = F.one_hot(chosen, num_experts).sum((0, 1)).to(probs.dtype)  # (E,)
    share = counts / counts.sum()
    return num_experts * (share * probs.mean(0)).sum()


def attach_molora(layers: nn.ModuleList, config: MoLoRAConfig, context: AdapterContext) -> list[MoLoRALinear]:
    """Replace the ``config.targets`` linear layers of every decoder layer by :class:`MoLoRALinear` wrappers.

    Their base weights keep their values (and are reached as ``<path>.base_layer.weight``).

    Raises:
        ValueError: a target names no linear layer of the decoder layers.
    """
    wrapped = []
    for layer in layers:
        for path, linear in named_linears(layer, config.targets, "model.molora.targets").items():
            assert isinstance(linear, nn.Linear)
            module = MoLoRALinear(
                linear,
                config.experts,
                rank=config.rank,
                alpha=config.alpha,
                dropout=config.dropout,
                routing=config.routing,
                top_k=config.top_k,
                expert_of=config.expert_of(),
                language_expert=config.language_expert if config.language_experts else None,
                context=context,
            )
            layer.set_submodule(path, module)
            wrapped.append(module)
    return wrapped


def merge_molora(module: nn.Module, expert: str, lang: str | None = None) -> None:
    """Replace, in place, every :class:`MoLoRALinear` inside ``module`` by its merged ``nn.Linear`` for ``expert``
    (and ``lang``'s language expert, see :meth:`MoLoRALinear.merge`)."""
    for path, sub in list(module.named_modules()):
        if isinstance(sub, MoLoRALinear):
            module.set_submodule(path, sub.merge(expert, lang))
