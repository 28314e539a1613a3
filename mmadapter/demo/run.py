"""``mmadapter demo [--out DIR] [--quick]``: the whole framework offline, in minutes, on a CPU.

1. data: spoken digit strings in five languages (espeak-ng), images of coloured shapes and community graphs
   whose nodes carry texts, as manifests and shards (:mod:`mmadapter.data.synthetic`,
   :mod:`mmadapter.data.synthetic_graphs`);
2. step 1: the tiny encoders and the LLM learn what pretrained ones would already know
   (:mod:`mmadapter.demo.pretrain`), because no weights can be downloaded here;
3. step 2: ``mmadapter train recipes/demo/speech_vision_graph.yaml``, every pretrained component frozen, on
   English speech, the images and the graphs: projector alignment, then instruction tuning with MoLoRA
   experts and zero-init gated prompts;
4. ``mmadapter infer`` on held-out audio files (English and the new language), images and a graph, and
   ``mmadapter eval`` on the held-out shards;
5. the new-language step: ``mmadapter train recipes/language/new_language_projector.yaml`` fine-tunes only
   the audio projector on a few hundred utterances of another language mixed with English, and both
   artefacts are evaluated on both languages; then ``recipes/language/new_language_lora.yaml`` trains the
   audio projector with a MoLoRA language expert of its own on the same data, evaluated on both languages;
6. the report: a table, example predictions and PNG plots (``report.json``, ``plots/``).

How much data, step 1's settings and the ``--quick`` variant come from ``recipes/demo/demo.yaml``
(:mod:`mmadapter.demo.settings`). Every step but step 1 runs ``mmadapter`` commands (``shard``, ``train``,
``infer``, ``eval``) in this process, each printed so that it can be rerun by hand. The recipes name
``runs/demo/...`` paths, which the demo rewrites to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmadapter.demo.settings import DEMO_RECIPE, load_demo_settings
from mmadapter.demo.steps import mmadapter_command as _mmadapter
from mmadapter.demo.steps import timed

if TYPE_CHECKING:
    from mmadapter.data.synthetic import SyntheticData

__all__ = ["add_arguments", "relocate", "run", "run_demo"]

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE_ROOT = "runs/demo"  # how the demo recipes name the demo's output directory
NEW_LANGUAGE = "de"
INFER_FILES = 3  # held-out files per kind (English audio, new-language audio, images) for mmadapter infer


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


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _train(recipe: Path, run_dir: Path, out: Path, extra: Sequence[str] = ()) -> None:
    _mmadapter("train", recipe, *relocate(recipe, out), *extra, "--run", _fresh(run_dir))


@dataclass(frozen=True)
class HeldOut:
    """A held-out shard set of the demo: its report name, table row (task, language, metric) and shards."""

    name: str
    task: str
    lang: str
    metric: str
    shards: str


def _held_out(data: SyntheticData, new_language: str) -> list[HeldOut]:
    return [
        HeldOut("en", "speech", "en", "wer", data.shard_pattern("speech_en", "test")),
        HeldOut(new_language, "speech", new_language, "wer", data.shard_pattern(f"speech_{new_language}", "test")),
        HeldOut("images", "images", "-", "accuracy", data.shard_pattern("images", "test")),
        HeldOut(
            "images_instruct", "images, asked otherwise", "-", "accuracy", data.shard_pattern("images_instruct", "test")
        ),
        HeldOut("graphs", "graphs", "-", "accuracy", data.shard_pattern("graphs", "test")),
    ]


def _infer_inputs(data: SyntheticData, new_language: str, folder: Path, k: int = INFER_FILES) -> tuple[Path, dict]:
    """The first ``k`` held-out audio files of English and of ``new_language`` and ``k`` held-out images, copied
    into ``folder`` for ``mmadapter infer --input FOLDER``; returns the folder and each file's reference by key
    (the file stem, as ``mmadapter infer`` names folder items)."""
    folder.mkdir(parents=True)
    references = {}
    for name in ("speech_en", f"speech_{new_language}", "images"):
        for line in data.manifests[name]["test"].read_text(encoding="utf-8").splitlines()[:k]:
            record = json.loads(line)
            source = data.root / record.get("audio", record.get("image", ""))
            shutil.copyfile(source, folder / source.name)
            references[source.stem] = record["response"]
    return folder, references


def _graph_inputs(data: SyntheticData, manifest: Path, k: int = INFER_FILES) -> tuple[Path, dict]:
    """A manifest of the first ``k`` held-out graphs with their questions, for ``mmadapter infer --input
    MANIFEST`` (graph files answer a question of their own, not a default prompt); returns it and each
    graph's reference by key."""
    lines = [json.loads(line) for line in data.manifests["graphs"]["test"].read_text(encoding="utf-8").splitlines()]
    records = [r | {"graph": str(data.root / r["graph"])} for r in lines[:k]]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return manifest, {r["key"]: r["response"] for r in records}


def _infer(artefact: Path, inputs: Mapping[str, Path], name: str, folder: Path) -> list[Path]:
    """``mmadapter infer`` of ``artefact`` on each input (a folder or a manifest) into
    ``folder/<name>_<input label>.jsonl``; the files written."""
    outputs = []
    for label, source in inputs.items():
        outputs.append(folder / f"{name}_{label}.jsonl")
        _mmadapter("infer", "--checkpoint", artefact, "--input", source, "--output", outputs[-1])
    return outputs


def _inferred(references: Mapping[str, str], outputs: Mapping[str, Sequence[Path]]) -> list[dict[str, str]]:
    """Per inferred file: its key, reference and each artefact's answer (``mmadapter infer``'s JSONL)."""
    answers: dict[str, dict[str, str]] = {}
    for artefact, paths in outputs.items():
        lines = [json.loads(text) for path in paths for text in path.read_text(encoding="utf-8").splitlines()]
        answers[artefact] = {r["key"]: r["output"] if "output" in r else f"error: {r.get('error')}" for r in lines}
    return [
        {"key": key, "reference": ref} | {a: answers[a].get(key, "") for a in answers}
        for key, ref in references.items()
    ]


def _evaluate(artefact: Path, held: HeldOut, report_dir: Path) -> dict[str, Any]:
    """``mmadapter eval`` of ``artefact`` on ``held``; its report (``report_dir/<name>.json``)."""
    report = report_dir / f"{held.name}.json"
    _mmadapter("eval", "--checkpoint", artefact, "--input", held.shards, "--metric", held.metric, "--output", report)
    return json.loads(report.read_text())


def run_demo(
    out: Path | str,
    quick: bool = False,
    seed: int = 0,
    new_language: str = NEW_LANGUAGE,
    recipe: Path | str = DEMO_RECIPE,
) -> dict[str, Any]:
    """Run every step of the demo into ``out`` with the settings of ``recipe`` (its ``quick`` ones when
    ``quick``); return (and write) ``out/report.json``.

    Raises:
        ValueError: ``recipe`` has a key that is not a setting (named in the message).
    """
    from mmadapter.demo.data import make_demo_data
    from mmadapter.demo.pretrain import pretrain_all, summary
    from mmadapter.demo.report import (
        EvalRow,
        examples,
        format_table,
        plot_accuracy_by_task,
        plot_losses,
        plot_wer_by_language,
        read_stage_losses,
    )

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = load_demo_settings(recipe, quick=quick)
    timings: dict[str, float] = {}

    with timed("data", timings):
        data = make_demo_data(out / "data", settings, seed=seed)
    with timed("step 1: the components learn (no pretrained weights offline)", timings):
        pretrained = pretrain_all(data, out / "pretrained", settings.step1, seed=seed)

    english, second, lora = out / "speech_vision_graph", out / "new_language", out / "new_language_lora"
    with timed("step 2: mmadapter train, encoders and LLM frozen (align, instruct)", timings):
        _train(RECIPES / "demo" / "speech_vision_graph.yaml", english, out, settings.multimodal)

    sets = _held_out(data, new_language)
    by_name = {held.name: held for held in sets}
    reports: dict[str, dict[str, dict[str, Any]]] = {"english": {}, "new_language": {}, "new_language_lora": {}}
    report_dir = out / "eval"
    with timed("step 3: mmadapter infer and eval on held-out audio files, images and graphs", timings):
        files, references = _infer_inputs(data, new_language, _fresh(out / "infer" / "inputs"))
        graphs, graph_references = _graph_inputs(data, out / "infer" / "graphs.jsonl")
        references |= graph_references
        inputs = {"files": files, "graphs": graphs}
        inferred = {"english": _infer(english, inputs, "english", out / "infer")}
        for held in sets:
            if held.name != new_language:
                reports["english"][held.name] = _evaluate(english, held, report_dir / "english")

    with timed(f"step 4: a new language ({new_language}): only the audio projector trains", timings):
        reports["english"][new_language] = _evaluate(english, by_name[new_language], report_dir / "english")
        language_recipe = RECIPES / "language" / "new_language_projector.yaml"
        _train(language_recipe, second, out, settings.new_language)
        for held in sets:
            reports["new_language"][held.name] = _evaluate(second, held, report_dir / "new_language")
        inferred["new_language"] = _infer(second, inputs, "new_language", out / "infer")

    with timed(f"step 4b: the new language with a LoRA expert of its own (audio projector + {new_language})", timings):
        _train(RECIPES / "language" / "new_language_lora.yaml", lora, out, settings.new_language)
        for name in ("en", new_language):  # the expert serves no other sample: the other sets score as before
            reports["new_language_lora"][name] = _evaluate(lora, by_name[name], report_dir / "new_language_lora")

    rows = [
        EvalRow(
            held.task,
            held.lang,
            held.metric,
            {a: reports[a][held.name]["overall"] for a in reports if held.name in reports[a]},
            reports["english"][held.name]["n"],
        )
        for held in sets
    ]
    table = format_table(rows, list(reports))

    curves = {f"step 1: {name}": (list(range(1, len(r.losses) + 1)), r.losses) for name, r in pretrained.items()}
    for run_dir in (english, second, lora):
        for stage, curve in read_stage_losses(run_dir / "metrics.jsonl").items():
            curves[f"{run_dir.name}: {stage}"] = curve
    wer = {
        a: {lang: reports[a][lang]["overall"] for lang in ("en", new_language) if lang in reports[a]} for a in reports
    }
    by_task = {
        f"{name}: {task}": score["score"]
        for name in ("images", "images_instruct", "graphs")
        for task, score in reports["english"][name]["by_task"].items()
    }
    plots = [
        plot_losses(curves, out / "plots" / "loss.png", "Training loss per stage"),
        plot_wer_by_language(wer, out / "plots" / "wer_by_language.png", "Held-out WER by artefact"),
        plot_accuracy_by_task(by_task, out / "plots" / "accuracy_by_task.png", "Held-out exact match per task"),
    ]
    shown = {
        name: examples(Path(reports["english"][key]["predictions"]))
        for name, key in (("speech en", "en"), ("images", "images"), ("graphs", "graphs"))
    }
    result = {
        "out": str(out),
        "quick": quick,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "step1": summary(pretrained),
        "table": [asdict(r) for r in rows],
        "reports": {a: {k: v["overall"] for k, v in r.items()} for a, r in reports.items()},
        "by_task": by_task,
        "examples": shown,
        "infer": _inferred(references, inferred),
        "plots": [str(p) for p in plots],
        "artefacts": {"english": str(english), "new_language": str(second), "new_language_lora": str(lora)},
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
    print("\nmmadapter infer on held-out files (reference → English artefact → new-language artefact):")
    for row in result["infer"]:
        print(f"  {row['key']}: {row['reference']!r} → {row.get('english')!r} → {row.get('new_language')!r}")
    print("\ntime per step:")
    for label, seconds in result["seconds"].items():
        print(f"  {seconds:7.1f} s  {label}")
    print(f"  {sum(result['seconds'].values()):7.1f} s  total")
    print(f"\nartefacts: {', '.join(result['artefacts'].values())}")
    print(f"plots: {', '.join(result['plots'])}")
    print(f"report: {Path(result['out']) / 'report.json'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmadapter demo``; pair with :func:`run`."""
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="every step on small settings (a smoke test)")
    parser.add_argument(
        "--recipe", type=Path, default=DEMO_RECIPE, help="the demo's own settings (default recipes/demo/demo.yaml)"
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Run ``mmadapter demo``."""
    from mmadapter.data.espeak import EspeakMissing

    try:
        run_demo(args.out, quick=args.quick, seed=args.seed, recipe=args.recipe)
    except EspeakMissing as e:
        print(f"mmadapter demo: {e}", file=sys.stderr)
        return 2
    return 0
