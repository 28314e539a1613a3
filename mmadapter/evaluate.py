"""Evaluation: batched inference against references, scored at corpus level overall, per language and per task.

``mmadapter eval --checkpoint RUN --input SHARDS|MANIFEST --metric wer`` answers every sample (through
:class:`~mmadapter.inference.InferenceRunner`), keeps the predictions file (``--predictions``, or
``REPORT.predictions.jsonl`` next to ``--output REPORT.json``; with neither, predictions are not kept), prints
a table and reports::

    {"metric": "wer", "overall": 0.12, "n": 120, "errors": 1, "unscored": 0,
     "by_lang": {"en": {"metric": "wer", "score": 0.1, "n": 100}, "zh": {"metric": "cer", ...}},
     "by_task": {"asr": {...}}, "predictions": "report.predictions.jsonl"}

``n`` counts scored items (an output and a reference); ``errors`` items that failed (excluded from the
scores); ``unscored`` items answered without a reference. Every score is computed at corpus level within its
group (:mod:`mmadapter.metrics`), so ``overall`` is not an average of the groups; it is ``null`` with no
scored item. A group's ``metric`` is ``cer`` where WER was asked for but the language is scored by
characters (zh, ja, th). Samples without ``lang`` are scored as and grouped under ``--lang``; without it,
with Whisper's basic normaliser and under ``"unknown"``, as samples without ``task`` are grouped. Languages
are grouped by their tag in its usual case (``ZH-cn`` with ``zh-CN``; ``zh`` is a group of its own).

``mmadapter eval --rescore PREDICTIONS.jsonl --metric chrf`` scores answers already written (by ``eval`` or
``infer``) again, without a model: another metric, ``--lang``, ``--task`` or ``--max-samples``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmadapter.artefact import atomic_write
from mmadapter.cli_checks import check_device, check_output
from mmadapter.inference import (
    GenerationOptions,
    InferenceRunner,
    Prediction,
    add_generation_arguments,
    generation_options,
    load_model,
    write_predictions,
)
from mmadapter.inference_inputs import Request, first_requests, open_requests
from mmadapter.languages import language_tag
from mmadapter.limits import DEFAULT_LIMITS, MediaLimits, add_limit_arguments, limits_from_args, positive
from mmadapter.metrics import METRICS, Metric, corpus_score, metric_for
from mmadapter.prediction_lines import first_lines, kept_lines, read_predictions

if TYPE_CHECKING:
    from mmadapter.model import MultimodalLM

__all__ = [
    "UNKNOWN",
    "add_arguments",
    "evaluate",
    "evaluate_requests",
    "format_report",
    "predictions_path",
    "read_predictions",
    "rescore",
    "run",
    "score_predictions",
]

UNKNOWN = "unknown"  # the group of samples without lang / task


def _check_metric(metric: str) -> Metric:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
    return metric  # type: ignore[return-value]


def _group(
    metric: Metric, lines: Sequence[Mapping[str, Any]], langs: Sequence[str | None], by: Callable[[int], str]
) -> dict[str, dict[str, Any]]:
    members: dict[str, list[int]] = {}
    for i in range(len(lines)):
        members.setdefault(by(i), []).append(i)
    out = {}
    for name in sorted(members):
        idx = members[name]
        kinds = {metric_for(metric, langs[i]) for i in idx}
        refs = [lines[i]["reference"] for i in idx]
        hyps = [lines[i]["output"] for i in idx]
        score = corpus_score(metric, refs, hyps, [langs[i] for i in idx])
        out[name] = {"metric": kinds.pop() if len(kinds) == 1 else metric, "score": score, "n": len(idx)}
    return out


def score_predictions(
    lines: Iterable[Mapping[str, Any]], metric: Metric | str, default_lang: str | None = None
) -> dict[str, Any]:
    """The report (see the module docstring) of prediction lines as :func:`write_predictions` writes them.

    Args:
        lines: ``{"key", "output", "reference", "lang"?, "task"?}`` or ``{"key", "error"}`` each.
        metric: One of :data:`~mmadapter.metrics.METRICS`.
        default_lang: The language of lines without ``lang``.

    Raises:
        ValueError: an unknown metric.
    """
    metric = _check_metric(metric)
    lines = list(lines)
    scored = [line for line in lines if "error" not in line and line.get("reference") is not None]
    errors = sum("error" in line for line in lines)
    langs = [line.get("lang") or default_lang for line in scored]
    refs = [line["reference"] for line in scored]
    hyps = [line["output"] for line in scored]
    return {
        "metric": metric,
        "overall": corpus_score(metric, refs, hyps, langs) if scored else None,
        "n": len(scored),
        "errors": errors,
        "unscored": len(lines) - errors - len(scored),
        "by_lang": _group(metric, scored, langs, lambda i: language_tag(langs[i]) or UNKNOWN),
        "by_task": _group(metric, scored, langs, lambda i: scored[i].get("task") or UNKNOWN),
    }


def _kept(requests: Iterable[Request], tasks: Sequence[str]) -> Iterator[Request]:
    """Requests of the given tasks, plus failures whose task is unknown (they still count as errors)."""
    for request in requests:
        if request.task in tasks or (request.error is not None and request.task is None):
            yield request


def evaluate(
    model_or_dir: MultimodalLM | Path | str,
    inputs: str | Path | Sequence[str | Path],
    metric: Metric | str = "wer",
    *,
    batch_size: int = 8,
    options: GenerationOptions | None = None,
    predictions: Path | str | None = None,
    tasks: Sequence[str] | None = None,
    default_lang: str | None = None,
    device: str | None = None,
    overrides: Sequence[str] = (),
    limits: MediaLimits = DEFAULT_LIMITS,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Answer every sample of ``inputs`` (or its first ``max_samples``) and score the answers against their
    references.

    Args:
        model_or_dir: A model (e.g. the one being trained; its train/eval mode is restored) or an artefact
            directory.
        inputs: Shards (``.tar`` paths, brace patterns) or a ``.jsonl`` manifest with references.
        metric: One of :data:`~mmadapter.metrics.METRICS`.
        batch_size: Samples generated together.
        options: Decoding settings (greedy by default).
        predictions: Where to write the prediction lines; ``None`` keeps them in memory only.
        tasks: Only samples of these tasks (default: all).
        default_lang: The language of samples without ``lang`` (for scoring, and for MoLoRA's language experts).
        device: Where to load an artefact (ignored for a model).
        overrides: Changes to an artefact's recipe at load time (``a.b=value``; ignored for a model).
        limits: Media size limits; an item above one is an error (a training run passes its ``data.limits``).
        max_samples: Only the first this many items (of ``tasks``, when given), counted as
            :func:`~mmadapter.inference_inputs.first_requests` counts them.

    Returns:
        The report described in the module docstring (with ``"predictions"`` when written).
    """
    metric = _check_metric(metric)
    requests = open_requests(inputs, limits=limits)
    if tasks:
        requests = _kept(requests, tasks)
    requests = first_requests(requests, max_samples)
    model = model_or_dir if not isinstance(model_or_dir, str | Path) else load_model(model_or_dir, device, overrides)
    return evaluate_requests(
        model,
        requests,
        metric,
        batch_size=batch_size,
        options=options,
        predictions=predictions,
        default_lang=default_lang,
    )


def evaluate_requests(
    model: MultimodalLM,
    requests: Iterable[Request],
    metric: Metric | str = "wer",
    *,
    batch_size: int = 8,
    options: GenerationOptions | None = None,
    predictions: Path | str | None = None,
    default_lang: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` on requests already opened (e.g. the first ``max_samples`` of each validation set).

    Returns:
        The report described in the module docstring (with ``"predictions"`` when written).
    """
    metric = _check_metric(metric)
    collected: list[Prediction] = []

    def keep(stream: Iterable[Prediction]) -> Iterator[Prediction]:
        for prediction in stream:
            collected.append(prediction)
            yield prediction

    stream = keep(InferenceRunner(model, batch_size, options, default_lang=default_lang).predict(requests))
    if predictions is None:
        for _ in stream:
            pass
    else:
        write_predictions(stream, predictions)
    report = score_predictions([p.to_json() for p in collected], metric, default_lang)
    if predictions is not None:
        report["predictions"] = str(predictions)
    return report


def rescore(
    path: Path | str,
    metric: Metric | str,
    *,
    tasks: Sequence[str] | None = None,
    default_lang: str | None = None,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """The report of a predictions file already written (by ``mmadapter eval`` or ``infer``), without a model:
    another metric, language or task selection on the same answers.

    Args:
        path: The predictions file.
        metric: One of :data:`~mmadapter.metrics.METRICS`.
        tasks: Only lines of these tasks (and error lines of no known task, as :func:`evaluate` keeps).
        default_lang: The language of lines without ``lang``.
        max_samples: Only the first this many items (of ``tasks``, when given), counted as :func:`evaluate`
            counts them (an error line of no item takes no place).

    Returns:
        The report described in the module docstring, with ``"predictions": path``.
    """
    lines: Iterable[Mapping[str, Any]] = read_predictions(path)
    if tasks:
        lines = kept_lines(lines, tasks)
    report = score_predictions(first_lines(lines, max_samples), metric, default_lang)
    report["predictions"] = str(path)
    return report


def predictions_path(report: Path | str) -> Path:
    """Where the predictions of ``report.json`` go: ``report.predictions.jsonl`` next to it."""
    return Path(report).with_suffix(".predictions.jsonl")


def format_report(report: Mapping[str, Any]) -> str:
    """A small table: the overall score, then one row per language and per task."""

    def fmt(metric: str, score: float | None) -> str:
        if score is None:
            return "-"
        return f"{score:.2f}" if metric in ("bleu", "chrf") else f"{score:.4f}"

    metric = report["metric"]
    lines = [
        f"{metric} {fmt(metric, report['overall'])} over {report['n']} item(s); "
        f"{report['errors']} error(s), {report['unscored']} without reference"
    ]
    for title in ("lang", "task"):
        groups = report[f"by_{title}"]
        width = max([len(title), *map(len, groups)])
        lines.append(f"{title:<{width}}  metric  {'score':>9}  {'n':>6}")
        for name, g in groups.items():
            lines.append(f"{name:<{width}}  {g['metric']:<6}  {fmt(g['metric'], g['score']):>9}  {g['n']:>6}")
    if "predictions" in report:
        lines.append(f"predictions: {report['predictions']}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmadapter eval``; pair with :func:`run`."""
    parser.add_argument("--checkpoint", type=Path, help="artefact directory (a training run)")
    parser.add_argument("--input", nargs="+", help="shards (.tar paths, brace pattern) or a MANIFEST.jsonl")
    parser.add_argument(
        "--rescore",
        type=Path,
        metavar="PREDICTIONS",
        help="score a predictions file already written (by eval or infer) instead of --checkpoint and --input",
    )
    parser.add_argument("--metric", choices=METRICS, default="wer", help="corpus-level metric (default: wer)")
    parser.add_argument("--output", type=Path, help="write the report JSON here")
    parser.add_argument(
        "--predictions", type=Path, help="prediction lines (default: REPORT.predictions.jsonl next to --output)"
    )
    parser.add_argument("--task", action="append", help="evaluate only samples of this task (repeatable)")
    parser.add_argument(
        "--lang", help="language of samples without one (e.g. en for the English normaliser; language experts)"
    )
    parser.add_argument(
        "--max-samples",
        type=positive(int),
        metavar="N",
        help="only the first N items of the input (of --task, when given)",
    )
    add_generation_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``mmadapter eval``: print the table (and write the report); 0 when at least one item was scored.

    Raises:
        ValueError: neither ``--checkpoint`` with ``--input`` nor ``--rescore`` alone, or a bad output path.
    """
    if args.rescore is not None:
        return _run_rescore(args)
    if args.checkpoint is None or args.input is None:
        raise ValueError(
            "give --checkpoint and --input, or --rescore PREDICTIONS.jsonl to score answers already written"
        )
    predictions = args.predictions or (predictions_path(args.output) if args.output else None)
    check_device(args.device)
    check_output(args.output, "--output", args.input)
    check_output(predictions, "--predictions", args.input)
    if predictions is not None and args.output is not None and Path(predictions).resolve() == args.output.resolve():
        raise ValueError(f"--predictions and --output are the same file ({args.output}): name two files")
    report = evaluate(
        args.checkpoint,
        args.input,
        args.metric,
        batch_size=args.batch_size,
        options=generation_options(args),
        predictions=predictions,
        tasks=args.task,
        default_lang=args.lang,
        device=args.device,
        overrides=args.override,
        limits=limits_from_args(args),
        max_samples=args.max_samples,
    )
    return _finish(args, report, args.input)


def _run_rescore(args: argparse.Namespace) -> int:
    given = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--input", args.input)) if value]
    if args.predictions is not None:
        given.append("--predictions")
    if given:
        raise ValueError(f"--rescore scores a predictions file alone: drop {', '.join(given)}")
    check_output(args.output, "--output", [args.rescore])
    report = rescore(args.rescore, args.metric, tasks=args.task, default_lang=args.lang, max_samples=args.max_samples)
    return _finish(args, report, [str(args.rescore)])


def _finish(args: argparse.Namespace, report: dict[str, Any], inputs: Sequence[str]) -> int:
    """Print the table, write the report, and say so when nothing was scored."""
    print(format_report(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
        print(f"report: {args.output}")
    if not report["n"]:
        tasks = f" of task {', '.join(args.task)}" if args.task else ""
        found = f"{report['errors']} failed, {report['unscored']} without a reference"
        print(f"mmadapter eval: error: no item{tasks} was scored in {' '.join(inputs)} ({found})", file=sys.stderr)
    return 0 if report["n"] else 1
