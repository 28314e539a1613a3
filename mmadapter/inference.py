"""Batch inference: answer files, folders, manifests and shards with a trained artefact (``mmadapter infer``).

:class:`InferenceRunner` takes :class:`~mmadapter.inference_inputs.Request` s in input order and yields one
:class:`Prediction` per request in the same order, generating ``batch_size`` at a time (left-padded, see
:meth:`MultimodalLM.generate`). One bad item never fails the others: a request that could not be read
arrives failed; one whose tokenization fails is failed alone; and when generation raises for a batch, its
items are retried one by one, so that only the item that raises again (or a batch too big for memory, now
run item by item) is reported as an error.

Output file (JSONL, one line per item, in input order): ``{"key", "output"}`` plus ``"reference"``,
``"lang"`` and ``"task"`` when the input has them, or ``{"key", "error"}`` (with ``"lang"`` and ``"task"``
when known); a folder item's line also names its ``"file"``. Lines are written and flushed one by one to
``OUT.partial`` (so progress can be followed and a crashed run leaves what it had), which is renamed onto
``OUT`` when every item is done: ``OUT`` itself is only ever complete (a pipe or device such as
``/dev/stdout`` is written straight).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmadapter.artefact import rename_target
from mmadapter.cli_checks import check_device, check_output, check_text
from mmadapter.data.skips import BadSample
from mmadapter.generation import GenerationOptions, add_generation_arguments, generation_options
from mmadapter.inference_inputs import Request, file_request, open_requests
from mmadapter.limits import add_limit_arguments, limits_from_args

if TYPE_CHECKING:
    from mmadapter.batch import Sample
    from mmadapter.model import MultimodalLM

__all__ = [
    "GenerationOptions",
    "InferenceRunner",
    "Prediction",
    "add_arguments",
    "add_generation_arguments",
    "generation_options",
    "infer_items",
    "load_model",
    "run",
    "write_predictions",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The answer to one request, or why there is none."""

    key: str | None
    output: str | None = None
    error: str | None = None
    reference: str | None = None
    lang: str | None = None
    task: str | None = None
    file: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The output line: ``{"key", "output"[, "reference", "lang", "task"]}`` or ``{"key", "error"[, "lang",
        "task"]}``, each with ``"file"`` for a folder item."""
        where = {"file": self.file} if self.file is not None else {}
        known = {name: value for name, value in (("lang", self.lang), ("task", self.task)) if value is not None}
        if self.error is not None:
            return {"key": self.key, "error": self.error} | known | where
        line: dict[str, Any] = {"key": self.key, "output": self.output}
        return line | ({"reference": self.reference} if self.reference is not None else {}) | known | where

    @classmethod
    def of(cls, request: Request, output: str | None = None, error: str | None = None) -> Prediction:
        return cls(request.key, output, error, request.reference, request.lang, request.task, request.file)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InferenceRunner:
    """Answers requests in batches, in input order, isolating every failure to its own item.

    Args:
        model: The model; it is put in eval mode while a batch runs and restored afterwards.
        batch_size: Requests generated together.
        options: Decoding settings.
        log_failures: Log each failed item as a warning (off where the caller reports the failure itself, as
            single-file ``mmadapter infer`` does).
        default_lang: The language of requests without one (MoLoRA's language experts route by it).
    """

    def __init__(
        self,
        model: MultimodalLM,
        batch_size: int = 8,
        options: GenerationOptions | None = None,
        *,
        log_failures: bool = True,
        default_lang: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, not {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.options = options or GenerationOptions()
        self.log_failures = log_failures
        self.default_lang = default_lang

    def predict(self, requests: Iterable[Request]) -> Iterator[Prediction]:
        """One :class:`Prediction` per request, in order; requests are read lazily, a batch at a time."""
        batch: list[Request] = []
        index = 0
        for request in requests:
            batch.append(request)
            if len(batch) == self.batch_size:
                yield from self.predict_batch(batch, index)
                batch, index = [], index + 1
        if batch:
            yield from self.predict_batch(batch, index)

    def predict_batch(self, requests: Sequence[Request], index: int = 0) -> list[Prediction]:
        """Answer one batch (the ``index``-th, for the sampling seed); see the module docstring for how
        failures are isolated."""
        out: list[Prediction | None] = [None] * len(requests)
        ready: list[tuple[int, Sample]] = []
        for i, request in enumerate(requests):
            if request.error is not None:
                out[i] = self._failed(request, request.error)
                continue
            try:
                ready.append((i, self._prepare(request)))
            except BadSample as e:  # found by an encoder's transform, which knows neither the key nor the file
                out[i] = self._failed(request, str(e.with_key(request.key, request.source)))
            except Exception as e:  # any failure of one item's tokenization or transform stays with it
                out[i] = self._failed(request, _describe(e))
        training = self.model.training
        self.model.eval()
        try:
            with self._rng(index):
                answers = self._generate([sample for _, sample in ready])
        finally:
            self.model.train(training)
        for (i, _), answer in zip(ready, answers, strict=True):
            request = requests[i]
            failed = isinstance(answer, BaseException)
            out[i] = self._failed(request, _describe(answer)) if failed else Prediction.of(request, output=answer)
        assert all(p is not None for p in out)
        return out  # type: ignore[return-value]

    @contextlib.contextmanager
    def _rng(self, index: int) -> Iterator[None]:
        """A forked RNG state seeded for batch ``index`` (the global state as it is without a seed)."""
        if self.options.seed is None:
            yield
            return
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.options.seed + index)
            yield

    def _prepare(self, request: Request) -> Sample:
        have = sorted(self.model.encoders)
        for modality in request.items:
            if modality not in self.model.encoders:
                raise ValueError(f"the input has {modality} items but the model has no {modality} encoder ({have=})")
        lang = request.lang or self.default_lang
        return self.model.prepare(
            request.key or "", request.messages, request.items, add_generation_prompt=True, lang=lang
        )

    def _generate(self, samples: Sequence[Sample]) -> list[str | BaseException]:
        if not samples:
            return []
        kwargs = self.options.generate_kwargs()
        try:
            return list(self.model.generate(samples, **kwargs))
        except Exception as e:  # whatever one item did (or memory), the others must still be answered
            if len(samples) == 1:
                return [e]
            log.warning("generation failed for a batch of %d (%s); retrying its items one by one", len(samples), e)
        answers: list[str | BaseException] = []
        for sample in samples:
            try:
                answers += self.model.generate([sample], **kwargs)
            except Exception as e:
                answers.append(e)
        return answers

    def _failed(self, request: Request, error: str) -> Prediction:
        if self.log_failures:
            log.warning("item %r failed: %s", request.key, error)
        return Prediction.of(request, error=error)


def infer_items(
    model: MultimodalLM,
    requests: Iterable[Request],
    batch_size: int = 8,
    options: GenerationOptions | None = None,
    default_lang: str | None = None,
) -> Iterator[Prediction]:
    """Shorthand for ``InferenceRunner(model, batch_size, options, default_lang=...).predict(requests)``."""
    return InferenceRunner(model, batch_size, options, default_lang=default_lang).predict(requests)


def write_predictions(predictions: Iterable[Prediction], path: Path | str) -> dict[str, int]:
    """Write prediction lines to ``path`` (line-flushed into ``PATH.partial``, renamed when complete; a
    device or pipe such as ``/dev/stdout`` is written straight, a symbolic link through to its target).

    Returns:
        ``{"written": lines, "errors": error lines}``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = rename_target(path)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    partial = path if target is None else target.with_name(target.name + ".partial")
    counts = {"written": 0, "errors": 0}
    # A file name that is not UTF-8 (a lone surrogate in an error message) is written as its JSON escape.
    with partial.open("w", encoding="utf-8", errors="backslashreplace") as f:
        for prediction in predictions:
            f.write(json.dumps(prediction.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            counts["written"] += 1
            counts["errors"] += not prediction.ok
    if target is not None:
        os.replace(partial, target)
    return counts


def load_model(checkpoint: Path | str, device: str | None = None, overrides: Sequence[str] = ()) -> MultimodalLM:
    """Load an artefact for inference: its recipe with ``overrides`` (``a.b=value``, e.g. a component's moved
    ``name_or_path``), on ``device`` (default: CUDA when available), in eval mode."""
    from mmadapter.model import MultimodalLM

    model = MultimodalLM.load(checkpoint, overrides)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.eval()


# --- command line ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmadapter infer``; pair with :func:`run`."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="artefact directory (a training run)")
    single = parser.add_argument_group("one input (prints the answer)")
    for modality in ("audio", "image", "graph"):
        single.add_argument(
            f"--{modality}", nargs="+", action="extend", default=[], metavar="PATH", help=f"{modality} file(s)"
        )
    single.add_argument("--prompt", help="the question; default per modality; placeholders are added if missing")
    batch = parser.add_argument_group("batch (writes JSONL, one line per item)")
    batch.add_argument(
        "--input", nargs="+", metavar="INPUT", help="a folder, a MANIFEST.jsonl, or shards (.tar / brace pattern)"
    )
    batch.add_argument("--output", type=Path, help="OUT.jsonl: {key, output} or {key, error} per item")
    parser.add_argument(
        "--lang", help="language of the input (of batch items without one), for a model with language experts"
    )
    add_generation_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``mmadapter infer``.

    Returns:
        0 when every single-mode item (or at least one batch item) was answered, 1 otherwise.

    Raises:
        ValueError: single and batch arguments mixed, or one of them incomplete.
    """
    media = {m: list(getattr(args, m)) for m in ("audio", "image", "graph") if getattr(args, m)}
    if args.input is not None and (media or args.output is None):
        raise ValueError("batch mode takes --input and --output, and no --audio/--image/--graph")
    if args.input is None and args.output is not None:
        raise ValueError("--output needs --input (batch mode)")
    options, limits = generation_options(args), limits_from_args(args)
    check_device(args.device)
    check_text(args.prompt, "--prompt")
    check_output(args.output, "--output", args.input or ())
    if args.input is None:
        if not media and args.prompt is None:
            raise ValueError("give --audio/--image/--graph and/or --prompt, or --input and --output")
        request = file_request("input", media, args.prompt, limits)
        if request.error is not None:  # reported before the model is loaded
            print(f"mmadapter infer: error: {request.error}", file=sys.stderr)
            return 1
        model = load_model(args.checkpoint, args.device, args.override)
        runner = InferenceRunner(model, 1, options, log_failures=False, default_lang=args.lang)
        prediction = runner.predict_batch([request])[0]
        if not prediction.ok:
            print(f"mmadapter infer: error: {prediction.error}", file=sys.stderr)
            return 1
        print(prediction.output)
        return 0
    requests = open_requests(args.input, args.prompt, limits)
    model = load_model(args.checkpoint, args.device, args.override)
    runner = InferenceRunner(model, args.batch_size, options, default_lang=args.lang)
    counts = write_predictions(runner.predict(requests), args.output)
    answered = counts["written"] - counts["errors"]
    summary = sys.stderr if rename_target(args.output) is None else sys.stdout  # keep a piped JSONL stream clean
    done = f"wrote {counts['written']} line(s) to {args.output}: {answered} answered, {counts['errors']} error(s)"
    print(done, file=summary)
    if not counts["written"]:
        print(f"mmadapter infer: error: no items in {' '.join(args.input)}", file=sys.stderr)
    return 0 if answered else 1
