"""The baseline arm of ``mmadapter bench model``: plain Hugging Face transformers + PEFT, as a LLaVA-style
training script would run the same workload.

Padded batches (one sample per row, right padding), ``attn_implementation="sdpa"``, PEFT LoRA on the recipe's
MoLoRA targets with its rank, alpha and dropout (one adapter: PEFT has no per-modality experts), and the loss
from the model's own ``labels=``, i.e. full-vocabulary logits at every position. The modality tokens come from
the same encoders and projectors (fresh copies, same weights) and are spliced into ``inputs_embeds`` at their
slots. Groups other than MoLoRA's (``projectors``, ``encoders.<m>``, ``llm``) train as they do in mmadapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmadapter.batch import MultimodalBatch
from mmadapter.bench.arm import Arm
from mmadapter.config import MoLoRAConfig, Recipe, StageConfig
from mmadapter.llm.causal_lm import checkpoint_activations, frozen_mode
from mmadapter.model import MultimodalLM

__all__ = ["baseline_arm", "check_comparable", "molora_groups"]

PEFT_MISSING = "the baseline of mmadapter bench model needs peft: pip install 'mmadapter[bench]'"


def molora_groups(recipe: Recipe) -> set[str]:
    """The trainable groups that stand for MoLoRA (``molora``, ``molora.<expert>``); empty without it."""
    molora = recipe.model.molora
    return {"molora", *(f"molora.{e}" for e in molora.experts)} if molora else set()


def check_comparable(recipe: Recipe) -> None:
    """Refuse adapters the baseline has no counterpart for.

    Raises:
        ValueError: the recipe has ``model.gated_attention`` or ``model.bias_norm``.
    """
    for key in ("gated_attention", "bias_norm"):
        if getattr(recipe.model, key) is not None:
            raise ValueError(
                f"model.{key}: the bench's Hugging Face + PEFT baseline has no counterpart for it (it mirrors "
                f"MoLoRA with PEFT LoRA and trains projectors, encoders and the LLM as the stage does); "
                f"override model.{key}=null to compare the rest"
            )


def baseline_arm(
    recipe: Recipe, stage: StageConfig, seed: int, device: torch.device, batches: Sequence[MultimodalBatch]
) -> Arm:
    """The HF + PEFT arm over ``batches`` (padded), built from the same seed as the mmadapter model so that its
    encoders, projectors and LLM start from the same weights.

    Raises:
        ImportError: the recipe has MoLoRA and peft is not installed.
    """
    check_comparable(recipe)
    adapters = molora_groups(recipe)
    others = [g for g in stage.trainable if g not in adapters]
    plain = recipe.model_copy(deep=True)
    plain.model.molora = None
    plain.model.llm.attn = "sdpa"
    plain.train.stages = [StageConfig(name=stage.name, trainable=others)]
    torch.manual_seed(seed)  # the same draws as the mmadapter model, whose adapters are built after these parts
    model = MultimodalLM.from_recipe(plain)
    lm: nn.Module = model.llm
    facts: dict[str, Any] = {"layout": "padded", "attention": "sdpa", "adapters": "none"}
    if recipe.model.molora is not None:
        lm = _with_lora(model, recipe.model.molora, train=bool(adapters & set(stage.trainable)), groups=others)
        facts["adapters"] = _describe(recipe.model.molora)
    if recipe.train.activation_checkpointing:
        checkpoint_activations(model.llm)  # the base model under PEFT's wrapper, LoRA layers included
    model.to(device).train()
    if not any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n):
        # a frozen LLM under PEFT, as mmadapter keeps it: eval mode, with only LoRA's dropout training
        frozen_mode(model.llm, training=True)
        for name, m in model.llm.named_modules():
            if name.endswith("lora_dropout"):
                m.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)

    def loss(batch: MultimodalBatch) -> Tensor:
        embeds = model.embed(batch)  # (b, t, d): text embeddings with the projected items at their slots
        out = lm(inputs_embeds=embeds, attention_mask=batch.attention_mask, labels=batch.labels, use_cache=False)
        return out.loss

    return Arm("baseline", loss, model, optimizer, [b.to(device) for b in batches], facts)


def _with_lora(model: MultimodalLM, config: MoLoRAConfig, *, train: bool, groups: list[str]) -> nn.Module:
    """Put PEFT LoRA into ``model.llm`` (in place); returns the PEFT model to call. LoRA trains when ``train``;
    ``groups`` are the model's other trainable groups, applied again since PEFT freezes the whole LLM."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError(PEFT_MISSING) from e
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.targets,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model.llm, lora)
    lora_params = [p for p in peft_model.parameters() if p.requires_grad]  # what PEFT left trainable
    model.set_trainable(groups)
    for p in lora_params:
        p.requires_grad_(train)
    return peft_model


def _describe(config: MoLoRAConfig) -> str:
    targets = config.targets if isinstance(config.targets, str) else ",".join(config.targets)
    return f"PEFT LoRA rank {config.rank} on {targets}"
