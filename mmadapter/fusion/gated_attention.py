"""Zero-init gated attention inside the frozen LLM (DESIGN.md §3), in one of two modes, both exactly the
frozen LLM at init (every gate is ``tanh(0) = 0``).

``prompt`` (LLaMA-Adapter, :class:`~mmadapter.fusion.prompt_attention.PromptAttention`): forward hooks
on each chosen layer's attention module, none of which changes its computation or its weights' names:

1. a pre-hook on the attention module keeps the rotary ``position_embeddings`` of the call;
2. a hook on ``q_proj`` keeps its output, from which the queries are rebuilt exactly as the attention forms
   them (view as heads, the layer's ``q_norm`` if any, the model's own ``apply_rotary_pos_emb``);
3. a pre-hook on ``o_proj`` adds the gated prompt branch to the attention output.

The attention itself stays on whatever kernel the LLM uses (sdpa, FlashAttention, flex). With
``conditioned``, each sample's prompts are shifted by ``condition(mean of its modality tokens)``
(LLaMA-Adapter V2's visual prompt, here one vector per sample); positions of a packed row use their own
sample's prompts. Works for Llama-family attention modules (``q_proj``/``k_proj``/``v_proj``/``o_proj``,
``head_dim``, called with ``position_embeddings``).

``cross`` (Flamingo, :class:`~mmadapter.fusion.cross_attention.GatedCrossAttentionBlock`): a pre-hook on
the decoder layers ``every - 1, 2·every - 1, …`` runs the block on their input hidden states.

The modules live in :class:`GatedAttention` (names ``gated_attention.layers.<i>.…``), outside the LLM, whose
weights keep their pretrained names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from mmadapter.adapter_config import GatedAttentionConfig
from mmadapter.adapter_context import AdapterContext
from mmadapter.fusion.cross_attention import GatedCrossAttentionBlock
from mmadapter.fusion.prompt_attention import PromptAttention
from mmadapter.llm.layers import select_layers

__all__ = ["GatedAttention"]


class GatedAttention(nn.Module):
    """The gated-attention adapters of one LLM; trainable group ``gated_attention``.

    Args:
        config: The recipe's ``model.gated_attention``.
        layers: The LLM's decoder layers.
        llm_config: The LLM's Hugging Face config (width, heads, norm epsilon).
        context: Where the positions' samples and modality tokens come from.
    """

    def __init__(
        self, config: GatedAttentionConfig, layers: nn.ModuleList, llm_config: Any, context: AdapterContext
    ) -> None:
        super().__init__()
        self.mode, self.context = config.mode, context
        dim, heads, depth = llm_config.hidden_size, llm_config.num_attention_heads, len(layers)
        if config.mode == "prompt":
            chosen = select_layers(config.layers, depth, "model.gated_attention.layers")
            self.layers = nn.ModuleDict({str(i): PromptAttention(dim, heads, config.prompt_len) for i in chosen})
            self.condition = nn.Linear(dim, dim, bias=False) if config.conditioned else None
            for i in chosen:
                _rotary(_attention(layers[i], i))  # fail now, not at the first forward
        else:
            chosen = [i for i in range(depth) if (i + 1) % config.every == 0]
            if not chosen:
                raise ValueError(f"model.gated_attention.every={config.every}: the LLM has only {depth} layers")
            eps = getattr(llm_config, "rms_norm_eps", 1e-6)
            self.layers = nn.ModuleDict(
                {str(i): GatedCrossAttentionBlock(dim, heads, config.ffn_mult, eps) for i in chosen}
            )
            self.condition = None
        self._rope: dict[int, tuple[Tensor, Tensor]] = {}
        self._query: dict[int, Tensor] = {}

    @property
    def needs_memory(self) -> bool:
        """Whether the adapters read the samples' modality tokens."""
        return self.mode == "cross" or self.condition is not None

    def attach(self, layers: nn.ModuleList) -> list[RemovableHandle]:
        """Register the forward hooks on the LLM's ``layers``; returns their handles."""
        handles = []
        for key in self.layers:
            i = int(key)
            if self.mode == "cross":
                handles.append(layers[i].register_forward_pre_hook(partial(self._cross, i), with_kwargs=True))
                continue
            attn = _attention(layers[i], i)
            handles.append(attn.register_forward_pre_hook(partial(self._keep_rope, i), with_kwargs=True))
            handles.append(attn.q_proj.register_forward_hook(partial(self._keep_query, i)))
            handles.append(attn.o_proj.register_forward_pre_hook(partial(self._add_prompts, i, attn)))
        return handles

    # --- prompt mode ----------------------------------------------------------------------------------

    def _keep_rope(self, i: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        rope = kwargs.get("position_embeddings")
        if rope is None:
            raise RuntimeError(f"decoder layer {i}: its attention was called without position_embeddings")
        self._rope[i] = rope

    def _keep_query(self, i: int, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if i in self._rope:  # inside the attention call, not a stray use of q_proj
            self._query[i] = output

    def _add_prompts(self, i: int, attn: nn.Module, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if i not in self._query:  # o_proj used outside an attention call
            return None
        out = args[0]  # (b, t, H·c)
        q, (cos, sin) = self._query.pop(i), self._rope.pop(i)
        q = q.unflatten(-1, (-1, attn.head_dim))  # (b, t, H, c)
        if getattr(attn, "q_norm", None) is not None:
            q = attn.q_norm(q)
        q = _rotary(attn)(q.transpose(1, 2), q.transpose(1, 2), cos, sin)[0]  # (b, H, t, c)
        tokens = self.context.tokens(out.shape[:-1])
        shift = groups = None
        if self.condition is not None and tokens is not None:
            pooled = tokens.pooled_memory()
            if pooled is not None:
                shift, groups = self.condition(pooled.to(self.condition.weight.dtype)), tokens.groups()
        return (out + self.layers[str(i)](attn, q, shift, groups), *args[1:])

    # --- cross mode -----------------------------------------------------------------------------------

    def _cross(
        self, i: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens = self.context.tokens(hidden.shape[:-1])
        if tokens is None or tokens.memory is None:
            return None
        hidden = self.layers[str(i)](hidden, tokens)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, kwargs | {"hidden_states": hidden}


def _attention(layer: nn.Module, i: int) -> nn.Module:
    attn = getattr(layer, "self_attn", None)
    needed = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")
    if attn is None or not all(hasattr(attn, n) for n in needed):
        raise ValueError(
            f"model.gated_attention: decoder layer {i} has no Llama-style self_attn with {', '.join(needed)}; "
            "prompt mode supports Llama-family attention (mode 'cross' works with any decoder)"
        )
    return attn


def _rotary(attn: nn.Module) -> Callable[..., tuple[Tensor, Tensor]]:
    """The ``apply_rotary_pos_emb`` of the module that defines the attention class."""
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None:
        raise ValueError(
            f"model.gated_attention: {type(attn).__name__} is defined without an apply_rotary_pos_emb function, "
            "so prompt mode cannot rebuild its queries"
        )
    return fn
