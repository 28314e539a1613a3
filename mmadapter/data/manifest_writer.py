"""What every ``data/prepare_*.py`` script shares: records checked by the manifest parser and written to a JSONL
manifest atomically, skips counted by reason, media paths relative to the manifest, keys in the key alphabet,
and the exit status (0 written, 1 nothing written, 2 the dataset is not laid out as expected).

A script yields records (``dict`` manifest lines, DESIGN.md §5) and :class:`Skip` s for samples it cannot use,
and hands them to :func:`run_prepare`; its reasons (``missing_audio``, ``empty_caption``, …) are its own, and the
manifest parser's skip reasons are added for records it refuses.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmadapter.data.manifest import parse_record
from mmadapter.data.skips import BadSample

__all__ = [
    "LayoutError",
    "ManifestSummary",
    "Skip",
    "media_ref",
    "run_prepare",
    "sanitize_key",
    "unique_key",
    "write_manifest",
]


class LayoutError(Exception):
    """The dataset folder or files are not laid out as expected (the message names the path and the layout)."""


@dataclass(frozen=True)
class Skip:
    """A sample that is not written: why (a short reason) and which (a path or key)."""

    reason: str
    detail: str


@dataclass
class ManifestSummary:
    """Lines written and samples skipped by reason, with the first example of each reason."""

    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def format(self, prog: str, out: Path) -> str:
        """``PROG: wrote n samples to OUT; skipped k: reason n (first: …), …``"""
        reasons = ", ".join(f"{r} {n} (first: {self.examples[r]})" for r, n in sorted(self.skipped.items()))
        return f"{prog}: wrote {self.written} samples to {out}; skipped {self.skipped.total()}" + (
            f": {reasons}" if reasons else ""
        )


def media_ref(path: Path, manifest_dir: Path, absolute: bool) -> str:
    """The manifest's path to a media file: relative to the manifest's folder, or absolute."""
    path = Path(os.path.abspath(path))
    return str(path) if absolute else os.path.relpath(path, os.path.abspath(manifest_dir))


def sanitize_key(text: str) -> str:
    """``text`` in the key alphabet: every character but letters, digits, ``_`` and ``-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def unique_key(key: str, seen: set[str]) -> str:
    """``key``, or ``key-2``, ``key-3``, … if taken; the result is added to ``seen``."""
    candidate, n = key, 1
    while candidate in seen:
        n += 1
        candidate = f"{key}-{n}"
    seen.add(candidate)
    return candidate


def write_manifest(items: Iterable[dict[str, Any] | Skip], out: Path) -> ManifestSummary:
    """Write the records as JSONL through a temporary file renamed onto ``out``, each checked by mmadapter's own
    manifest parser first (a refused record or a duplicate key is skipped under the parser's reason)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    summary, seen = ManifestSummary(), set()
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for item in items:
                if isinstance(item, dict):
                    line = json.dumps(item, ensure_ascii=False)
                    try:
                        parse_record(line, out.parent)
                        if item["key"] in seen:
                            raise BadSample("bad_json", item["key"], "duplicate key")
                    except BadSample as e:
                        item = Skip(e.reason, f"{item['key']}: {e}")
                    else:
                        seen.add(item["key"])
                        f.write(line + "\n")
                        summary.written += 1
                        continue
                summary.skipped[item.reason] += 1
                summary.examples.setdefault(item.reason, item.detail)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return summary


def run_prepare(prog: str, out: Path, load: Callable[[], Iterable[dict[str, Any] | Skip]]) -> int:
    """The body of a script's ``main``: ``load()`` checks the layout and returns the items, which are written
    to ``out``; the summary is printed.

    Returns:
        0 when at least one sample was written, 1 when none, 2 on a :class:`LayoutError` (printed to stderr).
    """
    try:
        summary = write_manifest(load(), out)
    except LayoutError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(summary.format(prog, out))
    return 0 if summary.written else 1
