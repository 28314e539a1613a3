"""Callbacks of a training run: metrics.jsonl, resume checkpoints, the best artefact."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mmadapter.artefact import save_artefact
from mmadapter.config import ShardSet
from mmadapter.limits import DEFAULT_LIMITS, MediaLimits

__all__ = ["BestArtefact", "MetricsLog", "PeriodicCheckpoint", "TaskMetric"]


def _scalars(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


class MetricsLog(L.Callback):
    """Appends one JSON object per logging step to ``metrics.jsonl`` (rank 0): ``step``, ``stage``, ``loss``,
    ``lr``, ``tokens_per_s``, ``skipped``, ``nonfinite`` (steps skipped so far) and validation metrics when they
    are computed. A non-finite value is left out (the loss of a skipped step), so that each line is strict JSON.

    On resume, lines of this stage past the resumed step are dropped first, so the file reads as one run.
    """

    def __init__(self, path: Path, stage: str, every: int) -> None:
        self.path = path
        self.stage = stage
        self.every = every

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if row.get("stage") != self.stage or row.get("step", 0) <= trainer.global_step:
                    keep.append(line)
            self.path.write_text("".join(f"{line}\n" for line in keep))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: the step has not happened (its number is still the previous one's)
        step = trainer.global_step
        if step % self.every == 0 or step in (1, trainer.max_steps):
            self._write(trainer, {k: v for k, v in _scalars(trainer).items() if not k.startswith("val_")})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, {k: v for k, v in _scalars(trainer).items() if k.startswith("val_")})

    def _write(self, trainer: L.Trainer, values: dict[str, float]) -> None:
        if not trainer.is_global_zero or not values:
            return
        row = {"step": trainer.global_step, "stage": self.stage} | {k: v for k, v in values.items() if math.isfinite(v)}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class PeriodicCheckpoint(L.Callback):
    """Writes the resume checkpoint ``path`` every ``every`` optimizer steps and at the end of the stage."""

    def __init__(self, path: Path, every: int) -> None:
        self.path = path
        self.every = every
        self._last = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step and step % self.every == 0 and step != self._last:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._last = trainer.global_step


class TaskMetric(L.Callback):
    """At each validation, generates answers for the validation sets and logs ``val_<metric>`` (WER, …)
    computed by :func:`mmadapter.evaluate.evaluate_requests`; runs on rank 0 and is shared with the other
    ranks. It scores each validation set (its first ``max_samples`` when it has a budget) within ``limits``
    (the stage's media ``data.limits``); unlike the validation loss, not cut at ``train.val_batches``.

    Attributes:
        report: The last validation's report (rank 0; ``None`` before the first).
    """

    def __init__(self, sets: Sequence[ShardSet], metric: str, limits: MediaLimits = DEFAULT_LIMITS) -> None:
        self.sets = list(sets)
        self.metric = metric
        self.limits = limits
        self.report: dict[str, Any] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from mmadapter.evaluate import evaluate_requests
        from mmadapter.inference_inputs import first_requests, shard_requests

        value = torch.tensor(float("nan"), device=pl_module.device)
        if trainer.is_global_zero:
            requests = itertools.chain.from_iterable(
                first_requests(shard_requests(s.shards, self.limits), s.max_samples) for s in self.sets
            )
            self.report = evaluate_requests(pl_module.model, requests, self.metric)
            if self.report["overall"] is not None:
                value.fill_(float(self.report["overall"]))
        value = trainer.strategy.broadcast(value, src=0)
        if not torch.isnan(value):
            pl_module.log(f"val_{self.metric}", float(value), prog_bar=True, batch_size=1)


class BestArtefact(L.Callback):
    """Keeps the artefact with the best validation ``metric`` in ``directory`` (rank 0), its provenance
    ``provenance`` (the stage and its shards) plus ``best``: the score and the step."""

    def __init__(self, directory: Path, metric: str, mode: str, provenance: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.provenance = provenance or {}
        self.metric = metric
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = math.inf

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = _scalars(trainer).get(self.metric)
        if trainer.sanity_checking or value is None or not trainer.is_global_zero:
            return
        if self.sign * value < self.best:
            self.best = self.sign * value
            best = {"best": {self.metric: value, "step": trainer.global_step}}
            save_artefact(pl_module.model, self.directory, self.provenance | best)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
