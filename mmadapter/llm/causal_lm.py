"""The frozen causal LM and its tokenizer: from a hub id / directory, or random weights from a ``config``.

The vocabulary is never resized (DESIGN.md §3): placeholders are slots filled with the pad id whose
embeddings the model replaces, so a trainable-only artefact can always restore the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mmadapter.config import LLMSpec
from mmadapter.llm.attention import choose_backend, default_device
from mmadapter.llm.tokenizer import CHATML_TEMPLATE, byte_tokenizer
from mmadapter.registry import Registry

__all__ = ["LLMS", "causal_lm", "causal_lm_test", "checkpoint_activations", "frozen_mode", "resolve_dtype"]

LLMS: Registry[Any] = Registry("llm")

TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` is bf16 when CUDA is available and fp32 otherwise."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


@LLMS.register(spec=LLMSpec)
def causal_lm(spec: LLMSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any ``AutoModelForCausalLM``: loaded from ``name_or_path``, or random from ``config`` (with a local
    byte-level tokenizer). Inside ``torch.device("meta")`` only the architecture is built."""
    if (spec.name_or_path is None) == (spec.config is None):
        raise ValueError("model.llm needs exactly one of name_or_path (hub id or directory) and config")
    dtype = resolve_dtype(spec.dtype)
    attn = choose_backend(spec.attn, default_device()).attn_implementation
    if spec.config is not None:
        tokenizer = byte_tokenizer()
        return _from_config(dict(spec.config), tokenizer, dtype, attn), tokenizer

    path = spec.name_or_path
    assert path is not None
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    if spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template
    elif tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.empty(()).device.type == "meta":
        config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=spec.trust_remote_code)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attn, trust_remote_code=spec.trust_remote_code
        )
    return model.eval(), tokenizer


@LLMS.register(spec=LLMSpec)
def causal_lm_test(spec: LLMSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny random Llama (2 layers, width 64) with the byte-level tokenizer; ``config`` entries override."""
    tokenizer = byte_tokenizer()
    config = TINY_LLAMA | dict(spec.config or {})
    attn = choose_backend(spec.attn, default_device()).attn_implementation
    return _from_config(config, tokenizer, resolve_dtype(spec.dtype), attn), tokenizer


def _from_config(
    config: dict[str, Any], tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype, attn: str
) -> PreTrainedModel:
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError("model.llm.config needs a model_type (e.g. 'llama', 'qwen2')")
    vocab = config.setdefault("vocab_size", len(tokenizer))
    if vocab < len(tokenizer):
        raise ValueError(f"model.llm.config.vocab_size={vocab} is smaller than the tokenizer's {len(tokenizer)} ids")
    config.setdefault("pad_token_id", tokenizer.pad_token_id)
    config.setdefault("eos_token_id", tokenizer.eos_token_id)
    config.setdefault("bos_token_id", None)
    hf_config = AutoConfig.for_model(model_type, **config)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attn)
    return model.eval()


def checkpoint_activations(llm: PreTrainedModel) -> None:
    """Recompute ``llm``'s decoder layers in backward instead of keeping their activations
    (``train.activation_checkpointing``); non-reentrant, so frozen layers between trainable inputs still pass
    gradients on."""
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def frozen_mode(llm: nn.Module, training: bool) -> None:
    """Put a frozen LLM in eval mode (no dropout, no attention dropout) while the model around it trains, except
    for what transformers recomputes under activation checkpointing: it recomputes only modules that carry the
    checkpointing flag, and only in training mode, so those alone take that mode."""
    llm.eval()
    if training and getattr(llm, "is_gradient_checkpointing", False):
        for m in llm.modules():
            if getattr(m, "gradient_checkpointing", False) is True:
                m.training = True
