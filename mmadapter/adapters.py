"""Every adapter a recipe puts inside the frozen LLM, built and hooked in one fixed order.

Order: MoLoRA wrappers replace their target linear layers (inside the LLM, PEFT-style names); bias/norm
hooks are registered on the (possibly wrapped) targets; gated-attention hooks come last, so that the query
they capture includes every other adapter's contribution. A forward pre-hook on the decoder gives the
:class:`~mmadapter.adapter_context.AdapterContext` the window of positions of each call.

Shape letters: b rows, t positions, S samples, M modality tokens of a sample, d LLM width, N tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

from mmadapter.adapter_context import AdapterContext, BatchTokens
from mmadapter.config import ModelConfig
from mmadapter.fusion.bias_norm import BiasNormTuning
from mmadapter.fusion.gated_attention import GatedAttention
from mmadapter.llm.layers import decoder_layers
from mmadapter.lora.molora import MoLoRALinear, attach_molora, merge_molora
from mmadapter.sample_groups import SampleGroups

__all__ = ["LLMAdapters"]


class LLMAdapters:
    """MoLoRA, gated attention and bias/norm tuning of one LLM (each absent unless the recipe names it).

    Args:
        llm: The frozen causal LM; MoLoRA wrappers are put into it in place, hooks registered on it.
        config: The recipe's ``model`` section.
    """

    def __init__(self, llm: PreTrainedModel, config: ModelConfig) -> None:
        self.context = AdapterContext()
        self.llm = llm
        layers = decoder_layers(llm)
        self.experts = list(config.molora.experts) if config.molora else []
        self.molora = attach_molora(layers, config.molora, self.context) if config.molora else []
        self.bias_norm = (
            BiasNormTuning(config.bias_norm, layers, getattr(llm.get_decoder(), "norm", None))
            if config.bias_norm
            else None
        )
        ga = config.gated_attention
        self.gated_attention = GatedAttention(ga, layers, llm.config, self.context) if ga else None
        self.in_sequence = ga.in_sequence if ga else True
        self.balance_weight = config.molora.balance_weight if config.molora else 0.0
        self._handles: list[RemovableHandle] = []
        self.attach()

    @property
    def active(self) -> bool:
        """Whether any adapter reads the context (so batches need binding)."""
        return bool(self.molora) or self.gated_attention is not None

    def attach(self) -> None:
        """Register every hook (idempotent)."""
        if self._handles:
            return
        layers = decoder_layers(self.llm)
        if self.active:
            self._handles.append(
                self.llm.get_decoder().register_forward_pre_hook(self.context.window_hook, with_kwargs=True)
            )
        if self.bias_norm is not None:
            self._handles += self.bias_norm.attach(layers)
        if self.gated_attention is not None:
            self._handles += self.gated_attention.attach(layers)

    def detach(self) -> None:
        """Remove every hook (the MoLoRA wrappers stay)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- trainable groups ------------------------------------------------------------------------------

    def group_modules(self) -> dict[str, list[nn.Module]]:
        """``molora``, ``molora.<expert>``, ``gated_attention``, ``llm.bias_norm`` → their modules."""
        out: dict[str, list[nn.Module]] = {}
        if self.molora:
            out["molora"] = [m for w in self.molora for m in w.adapter_modules()]
            out |= {f"molora.{e}": [m for w in self.molora for m in (w.lora_A[e], w.lora_B[e])] for e in self.experts}
        if self.gated_attention is not None:
            out["gated_attention"] = [self.gated_attention]
        if self.bias_norm is not None:
            out["llm.bias_norm"] = [self.bias_norm, *self.bias_norm.norm_modules()]
        return out

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters the adapters added inside the LLM (never part of group ``llm``)."""
        return [p for w in self.molora for m in w.adapter_modules() for p in m.parameters()]

    # --- batches ---------------------------------------------------------------------------------------

    def batch_tokens(
        self,
        modality: Tensor,
        sample: Tensor,
        num_samples: int,
        items: Sequence[tuple[Tensor, Tensor]],
        langs: Sequence[str | None] = (),
    ) -> BatchTokens | None:
        """What the adapters need to know about a batch, or ``None`` when none reads it.

        Args:
            modality: ``(b, t)`` token modality.
            sample: ``(b, t)`` owning sample, -1 on padding.
            num_samples: S.
            items: Per modality, its projected tokens ``(N, d)`` and their samples ``(N,)``.
            langs: The samples' ``lang``, for MoLoRA's language experts.
        """
        if not self.active:
            return None
        tokens = BatchTokens(modality, sample, num_samples, langs=tuple(langs))
        if self.gated_attention is not None and self.gated_attention.needs_memory and items:
            feats = [f for f, _ in items]
            owner = [o for _, o in items]
            groups = SampleGroups(torch.cat(owner)[None], num_samples)
            tokens.memory = groups.gather(torch.cat(feats)[None])  # (S, M, d)
            tokens.memory_mask = groups.valid
        return tokens

    # --- serving ---------------------------------------------------------------------------------------

    def merged_llm(self, expert: str, lang: str | None = None) -> PreTrainedModel:
        """A copy of the LLM with ``expert`` (and the language expert of ``lang``, when it has one) folded into
        every MoLoRA layer and the bias/norm biases folded into their layers: a plain Hugging Face model with
        no adapter code left.

        Raises:
            ValueError: the LLM has gated attention, or MoLoRA with learned routing, or no such expert.
        """
        if self.gated_attention is not None:
            raise ValueError("gated attention (model.gated_attention) cannot be folded into the LLM's weights")
        if self.molora and expert not in self.experts:
            raise ValueError(f"unknown expert {expert!r}; experts: {self.experts}")
        self.detach()
        try:
            merged = copy.deepcopy(self.llm)
        finally:
            self.attach()
        merge_molora(merged, expert, lang)
        if self.bias_norm is not None:
            self.bias_norm.fold_into(decoder_layers(merged))
        assert not any(isinstance(m, MoLoRALinear) for m in merged.modules())
        return merged.eval()
