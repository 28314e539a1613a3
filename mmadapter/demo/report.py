"""The demo's report: a table per task and language for both artefacts, example predictions, PNG plots.

Every score comes from an ``mmadapter eval`` report (``eval/<artefact>/<set>.json``); this module only
arranges them. Plots (matplotlib, Agg backend, so no display is needed):

- ``plots/loss.png``: the training loss of every stage, step 1's component trainings and step 2's stages
  (from ``metrics.jsonl``) and the new-language step;
- ``plots/wer_by_language.png``: held-out WER per language for the English and the new-language artefact;
- ``plots/accuracy_by_task.png``: held-out exact match of the English artefact per set and task (captions,
  captions and questions asked otherwise, graph questions).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EvalRow",
    "examples",
    "format_table",
    "plot_accuracy_by_task",
    "plot_losses",
    "plot_wer_by_language",
    "read_stage_losses",
]


@dataclass(frozen=True)
class EvalRow:
    """One line of the table: a held-out set scored for each artefact that was evaluated on it.

    Attributes:
        task: ``speech`` or ``images`` (or another demo task).
        lang: The language of the set (``en``, ``de``, …; ``-`` for images).
        metric: The eval metric (``wer``, ``accuracy``).
        scores: Artefact name → corpus score (a fraction), for those evaluated on this set.
        n: Scored items in the set.
    """

    task: str
    lang: str
    metric: str
    scores: dict[str, float] = field(default_factory=dict)
    n: int = 0


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def format_table(rows: Sequence[EvalRow], artefacts: Sequence[str]) -> str:
    """A fixed-width text table: task, language, metric, then one column per artefact."""
    header = ["task", "lang", "metric", "n", *artefacts]
    body = [
        [row.task, row.lang, {"wer": "WER", "accuracy": "exact match"}.get(row.metric, row.metric), str(row.n)]
        + [_percent(row.scores.get(a)) for a in artefacts]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(b) for b in body)])


def examples(predictions: Path, k: int = 3) -> list[dict[str, Any]]:
    """The first ``k`` lines of an eval predictions file (key, reference, output)."""
    rows = []
    with predictions.open(encoding="utf-8") as f:
        for text in f:
            rows.append(json.loads(text))
            if len(rows) == k:
                break
    return rows


def read_stage_losses(metrics_jsonl: Path) -> dict[str, tuple[list[int], list[float]]]:
    """``stage → (steps, losses)`` from a run's ``metrics.jsonl`` (training rows only)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for text in metrics_jsonl.read_text().splitlines():
        row = json.loads(text)
        if "loss" in row:
            steps, losses = curves.setdefault(row["stage"], ([], []))
            steps.append(row["step"])
            losses.append(row["loss"])
    return curves


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write ``fig`` as a PNG at ``path`` (creating its folder) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path, title: str) -> Path:
    """One panel per curve (``name → (steps, losses)``), log-scale loss against training step, into ``path``."""
    plt = _pyplot()
    n = len(curves)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, (steps, losses)) in zip(axes.flat, curves.items(), strict=False):
        ax.plot(steps, losses, color="tab:blue", linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss")
        if min(losses) > 0 and max(losses) > 10 * min(losses):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _save(plt, fig, path)


def plot_wer_by_language(wer: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Grouped bars: held-out WER (%) per language (x) for each artefact (``artefact → lang → WER``)."""
    plt = _pyplot()
    langs = sorted({lang for scores in wer.values() for lang in scores}, key=lambda x: (x != "en", x))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(langs), 3.6))
    width = 0.8 / max(len(wer), 1)
    for i, (artefact, scores) in enumerate(wer.items()):
        xs = [j + (i - (len(wer) - 1) / 2) * width for j in range(len(langs))]
        values = [100 * scores.get(lang, float("nan")) for lang in langs]
        bars = ax.bar(xs, values, width, label=artefact)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_xlabel("language of the held-out spoken digits")
    ax.set_ylabel("word error rate (%)")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def plot_accuracy_by_task(scores: Mapping[str, float], path: Path, title: str) -> Path:
    """Horizontal bars: held-out exact match (%) per ``"<set>: <task>"`` label."""
    plt = _pyplot()
    labels = list(scores)
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.45 * len(labels)))
    bars = ax.barh(range(len(labels)), [100 * scores[k] for k in labels], color="tab:green")
    ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("exact match (%)")
    ax.set_ylabel("held-out set: task")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, path)
