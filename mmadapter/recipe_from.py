"""``model: {from: RUN}``: a recipe that continues from a trained artefact takes that artefact's model.

A stage that starts from an artefact (``init_from``) must build the same model the artefact was trained
with, or its weights do not fit. Rather than copying the artefact's ``model`` section by hand, a recipe
may name the artefact: ``model: {from: runs/asr}`` reads ``runs/asr/recipe.yaml`` and uses its ``model``
section. Other keys beside ``from`` are merged on top, mapping by mapping (``model: {from: runs/asr,
llm: {attn: sdpa}}``), and overrides reach them as usual (``model.from=runs/other``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mmadapter.recipe_errors import RecipeError

__all__ = ["FROM_KEY", "merge_mappings", "resolve_model_from"]

FROM_KEY = "from"


def resolve_model_from(data: dict[str, Any], source: str | None = None) -> None:
    """Replace ``data["model"]`` in place when it names an artefact with ``from``.

    Raises:
        RecipeError: ``model.from`` is not a string, names no artefact, or that artefact's recipe has no
            ``model`` mapping (the message names ``model.from`` and the file).
    """
    model = data.get("model")
    if not isinstance(model, dict) or FROM_KEY not in model:
        return
    extra = {k: v for k, v in model.items() if k != FROM_KEY}
    run = model[FROM_KEY]
    if not isinstance(run, str) or not run:
        raise RecipeError([("model.from", f"expected the directory of a trained artefact, got {run!r}")], source)
    recipe = Path(run) / "recipe.yaml"
    if not recipe.is_file():
        raise RecipeError([("model.from", f"{run} is not an mmadapter artefact: {recipe} is missing")], source)
    try:
        base = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError([("model.from", f"{recipe} is not valid YAML: {e}")], source) from e
    if not isinstance(base, dict) or not isinstance(base.get("model"), dict):
        raise RecipeError([("model.from", f"{recipe} has no model mapping")], source)
    data["model"] = merge_mappings(base["model"], extra)


def merge_mappings(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged onto ``base``: mappings key by key, anything else (lists too) replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = value
    return out
