"""A run remembers the recipe it started with (``checkpoints/recipe.yaml``), and ``--resume`` continues it only
with that same recipe: a changed learning rate, seed, data mix or trainable set would silently mix two
trainings into one artefact whose ``recipe.yaml`` describes neither."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from mmadapter.artefact import atomic_write
from mmadapter.config import Recipe, RecipeError

__all__ = ["STARTED_RECIPE", "check_resumed_recipe", "record_started_recipe"]

log = logging.getLogger(__name__)

STARTED_RECIPE = Path("checkpoints") / "recipe.yaml"
_SHOWN = 12  # differing keys listed at most; the count says how many more


def record_started_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Save the resolved recipe a run starts with."""
    atomic_write(run_dir / STARTED_RECIPE, recipe.to_yaml().encode())


def check_resumed_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Refuse to resume ``run_dir`` with a recipe other than the one it started with.

    A run from before the recipe was recorded is resumed with a warning, and records the recipe now.

    Raises:
        RecipeError: every differing dotted key, with its value then and now.
    """
    path = run_dir / STARTED_RECIPE
    if not path.is_file():
        log.warning("%s holds no record of the recipe it started with; resuming with this one unchecked", run_dir)
        record_started_recipe(run_dir, recipe)
        return
    started = yaml.safe_load(path.read_text())
    now = yaml.safe_load(recipe.to_yaml())  # the same YAML round trip as the record
    changed = differences(started, now)
    if not changed:
        return
    problems = [(key, f"{then!r} when the run started, now {value!r}") for key, then, value in changed[:_SHOWN]]
    if len(changed) > _SHOWN:
        problems.append(("...", f"{len(changed) - _SHOWN} more key(s) differ"))
    hint = (
        f"--resume continues {run_dir} only with the recipe it started with ({path}); to train on from it "
        "with other settings, start a new --run whose stage sets init_from to a stage artefact of this one"
    )
    raise RecipeError(problems, hint=hint)


def differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every leaf where two parsed YAML documents differ;
    list items are keyed by index (``train.stages.1.lr``), a missing key reads as ``<absent>``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in list(a) + [k for k in b if k not in a]:
            out += differences(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{prefix}{i}.")]
    return [] if a == b else [(prefix.rstrip(".") or "<root>", a, b)]
