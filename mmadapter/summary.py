"""Parameter counts per component and trainable group, computed on the meta device (any size, no memory)."""

from __future__ import annotations

from typing import Any

import torch

from mmadapter.config import Recipe
from mmadapter.model import MultimodalLM

__all__ = ["build_on_meta", "count_parameters", "format_summary"]


def build_on_meta(recipe: Recipe) -> MultimodalLM:
    """Build the recipe's model with every parameter on the meta device (no weights are allocated or read)."""
    with torch.device("meta"):
        return MultimodalLM.from_recipe(recipe)


def count_parameters(model: MultimodalLM, stage: str | None = None) -> dict[str, Any]:
    """Trainable and frozen parameter counts for ``stage`` (default: the recipe's first stage).

    Returns ``{"stage", "components": {NAME: {"trainable", "frozen"}}, "groups": {GROUP: {...}},
    "total_trainable", "total_frozen"}``; tied weights count once. Components: ``llm`` (its pretrained weights),
    ``encoders``, ``projectors``, and the adapters inside the LLM: ``molora``, ``gated_attention``,
    ``bias_norm`` (its new biases; the norms it unfreezes count under ``llm``).
    """
    stages = {s.name: s for s in model.recipe.train.stages}
    chosen = stages[stage] if stage is not None else model.recipe.train.stages[0]
    if stage is not None and stage not in stages:
        raise KeyError(f"unknown stage {stage!r}; the recipe has {list(stages)}")
    model.set_trainable(chosen.trainable)
    seen: set[int] = set()

    def tally(params: Any, dedupe: bool) -> dict[str, int]:
        out = {"trainable": 0, "frozen": 0}
        for p in params:
            if dedupe:
                if id(p) in seen:
                    continue
                seen.add(id(p))
            out["trainable" if p.requires_grad else "frozen"] += p.numel()
        return out

    components = {kind: tally(params, dedupe=True) for kind, params in model.component_parameters().items()}
    groups = {g: tally(params.values(), dedupe=False) for g, params in model.groups().items()}
    return {
        "stage": chosen.name,
        "components": components,
        "groups": groups,
        "total_trainable": sum(c["trainable"] for c in components.values()),
        "total_frozen": sum(c["frozen"] for c in components.values()),
    }


def format_summary(counts: dict[str, Any]) -> str:
    """A plain-text table of :func:`count_parameters`' result."""
    rows = [("component", "trainable", "frozen")]
    rows += [(n, f"{c['trainable']:,}", f"{c['frozen']:,}") for n, c in counts["components"].items()]
    rows.append(("total", f"{counts['total_trainable']:,}", f"{counts['total_frozen']:,}"))
    rows.append(("", "", ""))
    rows.append((f"group (stage {counts['stage']})", "trainable", "frozen"))
    rows += [(g, f"{c['trainable']:,}", f"{c['frozen']:,}") for g, c in counts["groups"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}".rstrip() for r in rows)
