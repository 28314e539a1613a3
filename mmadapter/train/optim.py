"""AdamW over a stage's trainable groups, with per-group learning rates and warmup + cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmadapter.config import StageConfig, TrainConfig

__all__ = ["build_optimizer", "warmup_cosine"]


def build_optimizer(groups: dict[str, dict[str, nn.Parameter]], stage: StageConfig, train: TrainConfig):
    """AdamW with one parameter group per trainable group of ``stage``.

    The learning rate of a group is ``stage.lr[group]`` when ``stage.lr`` is a mapping, else ``stage.lr``,
    else ``train.lr``. Biases and norm weights (1-d tensors) get no weight decay. A parameter that two groups
    share (``projectors`` and ``projectors.audio``) goes to the more specific group.
    """
    chosen = sorted(stage.trainable, key=lambda g: -g.count("."))  # specific groups claim parameters first
    taken: set[int] = set()
    param_groups = []
    for group in chosen:
        lr = stage.lr.get(group, train.lr) if isinstance(stage.lr, dict) else (stage.lr or train.lr)
        params = [p for p in groups[group].values() if p.requires_grad and id(p) not in taken]
        taken |= {id(p) for p in params}
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for name, ps, wd in ((group, decay, train.weight_decay), (f"{group}.no_decay", no_decay, 0.0)):
            if ps:
                param_groups.append({"name": name, "params": ps, "lr": lr, "weight_decay": wd})
    if not param_groups:
        raise ValueError(f"stage {stage.name!r} trains nothing: groups {stage.trainable} have no parameters")
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.95), eps=1e-8)


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """The learning-rate multiplier at ``step``: linear warmup to 1, then cosine decay to ``floor``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
