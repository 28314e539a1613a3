"""The ``mmadapter`` command: one sub-command per task; logic lives in the package."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _list(args: argparse.Namespace) -> int:
    from mmadapter.registry import REGISTRIES

    _import_components()
    for kind, registry in sorted(REGISTRIES.items()):
        print(f"{kind}s:")
        for name in registry.names():
            print(f"  {name}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from mmadapter.config import load_recipe
    from mmadapter.summary import build_on_meta, count_parameters, format_summary

    recipe = load_recipe(args.recipe, args.overrides)
    counts = count_parameters(build_on_meta(recipe), args.stage)
    print(json.dumps(counts, indent=2) if args.json else format_summary(counts))
    return 0


def _import_components() -> None:
    import mmadapter.encoders
    import mmadapter.llm
    import mmadapter.projectors  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmadapter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every registered component, grouped by kind")
    p.set_defaults(handler=_list)

    p = sub.add_parser("summary", help="trainable and frozen parameter counts of a recipe's model")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides")
    p.add_argument("--stage", help="the stage whose trainable groups are counted (default: the first)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_summary)

    from mmadapter.data import writer

    p = sub.add_parser("shard", help="validate a JSONL manifest and write webdataset shards + stats.json")
    writer.add_arguments(p)
    p.set_defaults(handler=writer.run)

    from mmadapter.train import run as training

    p = sub.add_parser("train", help="train a recipe's stages into a run directory")
    training.add_arguments(p)
    p.set_defaults(handler=training.run)

    from mmadapter import evaluate, inference

    p = sub.add_parser("infer", help="answer audio files, images, folders, manifests or shards")
    inference.add_arguments(p)
    p.set_defaults(handler=inference.run)

    p = sub.add_parser("eval", help="score a run's answers against references (WER, CER, BLEU, chrF, accuracy)")
    evaluate.add_arguments(p)
    p.set_defaults(handler=evaluate.run)

    from mmadapter.bench import data as bench_data
    from mmadapter.bench import model as bench_model

    p = sub.add_parser("bench", help="measure throughput (data: the shard → batch pipeline; model: vs HF + PEFT)")
    what = p.add_subparsers(dest="what", required=True, metavar="{data,model}", help="what to benchmark")
    q = what.add_parser("data", help="samples/s and tokens/s of the shard → batch pipeline")
    bench_data.add_arguments(q)
    q.set_defaults(handler=bench_data.run)
    q = what.add_parser("model", help="a training step through mmadapter and a transformers + PEFT baseline")
    bench_model.add_arguments(q)
    q.set_defaults(handler=bench_model.run)

    from mmadapter.demo import run as demo

    p = sub.add_parser("demo", help="the offline demo: synthetic data, staged training, inference, evaluation")
    demo.add_arguments(p)
    p.set_defaults(handler=demo.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, KeyError, OSError) as e:  # bad input or a file problem: a message, not a traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"mmadapter {args.command}: error: {_without_worker_traceback(message, e)}", file=sys.stderr)
        return 2


def _without_worker_traceback(message: str, error: BaseException) -> str:
    """The message of an error re-raised from a DataLoader worker, which torch prefixes with the worker's
    whole traceback ("Caught ... in DataLoader worker process 0. Original Traceback ...")."""
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    module, name = type(error).__module__, type(error).__qualname__
    name = name if module in ("builtins", "__main__") else f"{module}.{name}"
    head = f"\n{name}: "  # the last line of the traceback, as the traceback module writes it
    return message.rpartition(head)[2].strip() if head in message else message


if __name__ == "__main__":
    sys.exit(main())
