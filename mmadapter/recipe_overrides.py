"""Command-line recipe overrides: ``a.b.c=value`` with JSON values and list indices."""

from __future__ import annotations

import json
from typing import Any

from mmadapter.recipe_errors import RecipeError

__all__ = ["apply_overrides"]


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str | None = None) -> None:
    """Apply ``dotted.key=value`` overrides in place; values are JSON when they parse, else strings.

    Integer path parts index lists (``train.stages.1.max_steps=10``); missing mappings are created.
    """
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append((item, "an override must look like dotted.key=value"))
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.split(".")
        node: Any = data
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if isinstance(node, list):
                    idx = int(part)
                    if not -len(node) <= idx < len(node):
                        raise IndexError(f"index {idx} is out of range for a list of {len(node)}")
                    if last:
                        node[idx] = value
                    else:
                        node = node[idx]
                elif isinstance(node, dict):
                    if last:
                        node[part] = value
                    else:
                        node = node.setdefault(part, {})
                else:
                    raise TypeError(f"{'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping or list")
        except (ValueError, IndexError, TypeError) as e:
            problems.append((key, f"cannot apply override: {e}"))
    if problems:
        raise RecipeError(problems, source)
