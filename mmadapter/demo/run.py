"""``mmadapter demo [--out DIR] [--quick]``: the whole framework offline, in minutes, on a CPU.

1. data: spoken digit strings in five languages (espeak-ng) and images of coloured shapes, as manifests and
   shards (:mod:`mmadapter.data.synthetic`);
2. step 1: the tiny encoders and the LLM learn what pretrained ones would already know
   (:mod:`mmadapter.demo.pretrain`), because no weights can be downloaded here;
3. step 2: ``mmadapter train recipes/demo/speech_vision.yaml``, every pretrained component frozen, on English
   speech and the images: projector alignment, then instruction tuning with MoLoRA experts and zero-init
   gated prompts;
4. ``mmadapter infer`` on held-out audio files and images, and ``mmadapter eval`` on the held-out shards;
5. the new-language step: ``mmadapter train recipes/language/new_language_projector.yaml`` fine-tunes only
   the audio projector on a few hundred utterances of another language mixed with English, and both
   artefacts are evaluated on both languages;
6. the report: a table, example predictions and PNG plots (``report.json``, ``plots/``).

Steps 3–5 run the ``mmadapter`` commands themselves (in this process; each is printed so that it can be
rerun by hand). The recipes name ``runs/demo/...`` paths, which the demo rewrites to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from mmadapter.demo.steps import timed

__all__ = ["QUICK", "STANDARD", "DemoSettings", "add_arguments", "relocate", "run", "run_demo"]

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE_ROOT = "runs/demo"  # how the demo recipes name the demo's output directory
NEW_LANGUAGE = "de"


@dataclass(frozen=True)
class DemoSettings:
    """What differs between the full and the quick demo (beyond data sizes and step 1's settings)."""

    speech_vision: tuple[str, ...] = ()  # recipe overrides of step 2
    new_language: tuple[str, ...] = ()  # recipe overrides of the new-language step


STANDARD = DemoSettings()
QUICK = DemoSettings(
    speech_vision=("train.max_steps=12", "train.stages.1.max_steps=8", "train.log_every=2"),
    new_language=("train.max_steps=8", "train.log_every=2"),
)


def relocate(recipe: Path, out: Path) -> list[str]:
    """Overrides that move every ``runs/demo/...`` path of ``recipe`` under ``out`` (``dotted.key=value``)."""
    overrides: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}.{i}")
        elif isinstance(node, str) and (node == RECIPE_ROOT or node.startswith(RECIPE_ROOT + "/")):
            overrides.append(f"{key}={out / node[len(RECIPE_ROOT) + 1 :]}".rstrip("/"))

    walk(yaml.safe_load(recipe.read_text()), "")
    return overrides


def _mmadapter(*argv: str | Path) -> None:
    """Run one ``mmadapter`` command in this process, printing it first; raise if it fails."""
    from mmadapter.cli import main

    args = [str(a) for a in argv]
    print("$ mmadapter " + " ".join(args), flush=True)
    code = main(args)
    if code != 0:
        raise RuntimeError(f"mmadapter {args[0]} failed (exit code {code})")


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _train(recipe: Path, run_dir: Path, out: Path, extra: Sequence[str] = ()) -> None:
    _mmadapter("train", recipe, *relocate(recipe, out), *extra, "--run", _fresh(run_dir))


def _evaluate(artefact: Path, shards: str, metric: str, report: Path) -> dict[str, Any]:
    _mmadapter("eval", "--checkpoint", artefact, "--input", shards, "--metric", metric, "--output", report)
    return json.loads(report.read_text())


def run_demo(out: Path | str, quick: bool = False, seed: int = 0, new_language: str = NEW_LANGUAGE) -> dict[str, Any]:
    """Run every step of the demo into ``out``; return (and write) ``out/report.json``."""
    from mmadapter.demo.data import make_demo_data
    from mmadapter.demo.pretrain import pretrain_all, summary
    from mmadapter.demo.report import (
        EvalRow,
        examples,
        format_table,
        plot_losses,
        plot_wer_by_language,
        read_stage_losses,
    )

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = QUICK if quick else STANDARD
    timings: dict[str, float] = {}

    with timed("data", timings):
        data = make_demo_data(out / "data", quick=quick, seed=seed)
    with timed("step 1: the components learn (no pretrained weights offline)", timings):
        pretrained = pretrain_all(data, out / "pretrained", quick=quick, seed=seed)

    english, second = out / "speech_vision", out / "new_language"
    with timed("step 2: mmadapter train, encoders and LLM frozen (align, instruct)", timings):
        _train(RECIPES / "demo" / "speech_vision.yaml", english, out, settings.speech_vision)

    held_out = {
        "en": data.shard_pattern("speech_en", "test"),
        new_language: data.shard_pattern(f"speech_{new_language}", "test"),
        "images": data.shard_pattern("images", "test"),
    }
    reports: dict[str, dict[str, dict[str, Any]]] = {"english": {}, "new_language": {}}
    with timed("step 3: mmadapter infer and eval on held-out audio files and images", timings):
        audio = sorted((data.root / "audio" / "en").glob("*.flac"))[0]
        image = sorted((data.root / "images").glob("*.png"))[0]
        _mmadapter("infer", "--checkpoint", english, "--audio", audio)
        _mmadapter("infer", "--checkpoint", english, "--image", image)
        reports["english"]["en"] = _evaluate(english, held_out["en"], "wer", out / "eval" / "english" / "en.json")
        reports["english"]["images"] = _evaluate(
            english, held_out["images"], "accuracy", out / "eval" / "english" / "images.json"
        )

    with timed(f"step 4: a new language ({new_language}): only the audio projector trains", timings):
        report_dir = out / "eval"
        reports["english"][new_language] = _evaluate(
            english, held_out[new_language], "wer", report_dir / "english" / f"{new_language}.json"
        )
        language_recipe = RECIPES / "language" / "new_language_projector.yaml"
        _train(language_recipe, second, out, settings.new_language)
        for lang in ("en", new_language):
            reports["new_language"][lang] = _evaluate(
                second, held_out[lang], "wer", report_dir / "new_language" / f"{lang}.json"
            )

    rows = [
        EvalRow("speech", lang, "wer", {a: reports[a][lang]["overall"] for a in reports if lang in reports[a]})
        for lang in ("en", new_language)
    ]
    rows.append(EvalRow("images", "-", "accuracy", {"english": reports["english"]["images"]["overall"]}))
    for row in rows:
        key = row.lang if row.task == "speech" else "images"
        object.__setattr__(row, "n", reports["english"][key]["n"])
    table = format_table(rows, ["english", "new_language"])

    curves = {f"step 1: {name}": (list(range(1, len(r.losses) + 1)), r.losses) for name, r in pretrained.items()}
    for run_dir in (english, second):
        for stage, curve in read_stage_losses(run_dir / "metrics.jsonl").items():
            curves[f"{run_dir.name}: {stage}"] = curve
    wer = {a: {lang: reports[a][lang]["overall"] for lang in reports[a] if lang != "images"} for a in reports}
    plots = [
        plot_losses(curves, out / "plots" / "loss.png", "Training loss per stage"),
        plot_wer_by_language(wer, out / "plots" / "wer_by_language.png", "Held-out WER by artefact"),
    ]
    shown = {
        name: examples(Path(report["predictions"]))
        for name, report in (("speech en", reports["english"]["en"]), ("images", reports["english"]["images"]))
    }
    result = {
        "out": str(out),
        "quick": quick,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "step1": summary(pretrained),
        "table": [asdict(r) for r in rows],
        "reports": {a: {k: v["overall"] for k, v in r.items()} for a, r in reports.items()},
        "examples": shown,
        "plots": [str(p) for p in plots],
        "artefacts": {"english": str(english), "new_language": str(second)},
    }
    (out / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    _print_report(result, table)
    return result


def _print_report(result: Mapping[str, Any], table: str) -> None:
    print("\n== mmadapter demo: held-out results (computed by mmadapter eval) ==")
    print(table)
    for name, rows in result["examples"].items():
        print(f"\nexamples ({name}):")
        for row in rows:
            print(f"  {row.get('key')}: reference {row.get('reference')!r} → output {row.get('output')!r}")
    print("\ntime per step:")
    for label, seconds in result["seconds"].items():
        print(f"  {seconds:7.1f} s  {label}")
    print(f"  {sum(result['seconds'].values()):7.1f} s  total")
    print(f"\nartefacts: {result['artefacts']['english']}, {result['artefacts']['new_language']}")
    print(f"plots: {', '.join(result['plots'])}")
    print(f"report: {Path(result['out']) / 'report.json'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmadapter demo``; pair with :func:`run`."""
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="every step on small settings (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Run ``mmadapter demo``."""
    from mmadapter.data.synthetic import EspeakMissing

    try:
        run_demo(args.out, quick=args.quick, seed=args.seed)
    except EspeakMissing as e:
        print(f"mmadapter demo: {e}", file=sys.stderr)
        return 2
    return 0
