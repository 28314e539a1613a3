"""Reading a predictions file back (``mmadapter eval --rescore``): every line checked, so that a report never
scores a file with lines silently left out; and ``mmadapter eval``'s ``--task`` and ``--max-samples``
selections, applied to lines instead of requests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["first_lines", "kept_lines", "read_predictions"]


def read_predictions(path: Path | str) -> list[dict[str, Any]]:
    """The lines of a predictions file as :func:`~mmadapter.inference.write_predictions` writes them, each
    checked (to re-score with :func:`~mmadapter.evaluate.score_predictions`).

    Raises:
        ValueError: naming the file and line, for a line that is not JSON or not a prediction line: an object
            with a string ``output`` or ``error`` and a string ``key`` (``null`` only on an error line that
            belongs to no one item), and ``reference``, ``lang`` and ``task`` strings where present.
    """
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e.msg} at column {e.colno})") from None
            problem = _problem(line)
            if problem is not None:
                raise ValueError(f"{path}:{number}: not a prediction line: {problem}")
            lines.append(line)
    return lines


def _problem(line: Any) -> str | None:
    if not isinstance(line, dict):
        return f"a JSON {type(line).__name__}, not an object"
    if not isinstance(line.get("output", line.get("error")), str):
        return "neither a string 'output' nor a string 'error'"
    if not isinstance(line.get("key"), str) and not (line.get("key") is None and "error" in line):
        return "no string 'key' (only an error line may have a null key)"
    for name in ("reference", "lang", "task"):
        if line.get(name) is not None and not isinstance(line[name], str):
            return f"{name!r} is a {type(line[name]).__name__}, not a string"
    return None


def kept_lines(lines: Iterable[Mapping[str, Any]], tasks: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    """Lines of the given tasks, plus error lines of no known task (they still count as errors)."""
    for line in lines:
        if line.get("task") in tasks or ("error" in line and line.get("task") is None):
            yield line


def first_lines(lines: Iterable[Mapping[str, Any]], n: int | None) -> list[Mapping[str, Any]]:
    """The first ``n`` items' lines (all for ``None``): an error line of no item (a null key) takes no place."""
    out, taken = [], 0
    for line in lines:
        if taken == n:
            break
        out.append(line)
        taken += line.get("key") is not None
    return out
