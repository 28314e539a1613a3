"""The LightningModule around :class:`MultimodalLM` for one training stage."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR

from mmadapter.batch import MultimodalBatch
from mmadapter.config import StageConfig, TrainConfig
from mmadapter.data.skips import SkipCounter
from mmadapter.model import MultimodalLM
from mmadapter.train.counts import StageCounts
from mmadapter.train.optim import build_optimizer, warmup_cosine
from mmadapter.train.ranks import gather_from_ranks
from mmadapter.train.rng import gather_rng_states, restore_rng_states

__all__ = ["NonFiniteLoss", "StageModule"]

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class StageModule(L.LightningModule):
    """Trains the groups of one stage; checkpoints hold only their weights plus each rank's random
    states (:mod:`mmadapter.train.rng`) and the data state.

    Args:
        model: The model, with the stage's groups already trainable.
        stage: The stage being trained.
        train: The recipe's train section.
        max_steps: Optimizer steps of this stage.
        max_bad_fraction: Stop when more of the data stream than this was bad (skips above the limits aside).
        keys_log: Where to append each batch's sample keys (``train.log_sample_keys``), a line per batch.
    """

    def __init__(
        self,
        model: MultimodalLM,
        stage: StageConfig,
        train: TrainConfig,
        max_steps: int,
        max_bad_fraction: float,
        keys_log: Path | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.train_cfg = train
        self.max_steps = max_steps
        self.max_bad_fraction = max_bad_fraction
        self.keys_log = keys_log
        self.strict_loading = False  # checkpoints carry only the trainable weights
        self.counts = StageCounts()  # this rank's; ``totals`` holds every rank's sum once the stage is done
        self.totals: StageCounts | None = None
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._bad_loss = ""  # why this optimizer step's loss is not finite, until the step
        self._step_tokens = 0
        self._clock = time.perf_counter()
        self._val = torch.zeros(2, dtype=torch.float64)
        self._val_skips = SkipCounter()

    # --- training -----------------------------------------------------------------------------------------

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> torch.Tensor | None:
        if batch.skipped:
            self.counts.skips.merge(batch.skipped)
            self.counts.skips.check(self.max_bad_fraction)
        if self.keys_log is not None:
            path = self.keys_log / f"rank{self.global_rank}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(" ".join(batch.keys) + "\n")
        out = self.model(batch)
        loss = out.loss  # already holds the weighted auxiliary losses (e.g. MoLoRA load balancing)
        tokens = batch.num_tokens()
        self.counts.tokens += tokens
        self.counts.samples += len(batch.keys)
        self._step_tokens += tokens
        self.log("loss", loss.detach(), prog_bar=True, batch_size=1)  # metrics.jsonl leaves a non-finite one out
        for name, value in out.aux.items():
            self.log(name, value.detach().float(), batch_size=1)
        if not torch.isfinite(loss):
            # Still backpropagated: its non-finite gradients reach every rank through the gradient all-reduce,
            # so that all of them skip this step together (a rank returning None would leave the others
            # waiting in backward).
            self._bad_loss = self._bad_loss or f"loss is {loss.item()}"
            if not loss.requires_grad:
                return None  # nothing trainable reached it: nothing to backpropagate
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Once per optimizer step, after its backward passes: skip it when its loss or gradient is not
        finite, then log the step's ``tokens_per_s``, ``lr``, ``skipped`` and ``nonfinite`` (here rather than
        at batch end, so that the metrics log, a callback run before the module's own batch-end hook, writes
        this step's values)."""
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        bad = self._bad_loss
        if not bad and grads and not torch.isfinite(torch.stack([g.detach().float().norm() for g in grads])).all():
            bad = "gradient is not finite"
        self._bad_loss = ""
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False) and not bad:
            bad = "another rank's loss or gradient is not finite"  # every rank skips, or the copies drift apart
        if bad:
            for g in optimizer.param_groups:
                for p in g["params"]:
                    p.grad = None  # AdamW leaves parameters without a gradient untouched: the step is skipped
            self._nonfinite(bad)
        else:
            self.nonfinite_in_a_row = 0
        now = time.perf_counter()
        rate = self._step_tokens / max(now - self._clock, 1e-9)
        self._clock, self._step_tokens = now, 0
        self.log("tokens_per_s", rate, prog_bar=True, batch_size=1)
        self.log("lr", optimizer.param_groups[0]["lr"], batch_size=1)
        self.log("skipped", float(self.counts.skips.skipped), batch_size=1)
        self.log("nonfinite", float(self.nonfinite_total), batch_size=1)

    def _nonfinite(self, what: str) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        log.warning("step %d skipped: %s (%d in a row)", self.global_step + 1, what, self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.train_cfg.max_nonfinite:
            raise NonFiniteLoss(
                f"{self.nonfinite_in_a_row} consecutive steps were non-finite ({what}); "
                f"lower the learning rate or check the data (train.max_nonfinite={self.train_cfg.max_nonfinite})"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model.groups(), self.stage, self.train_cfg)
        cfg = self.train_cfg
        schedule = LambdaLR(
            optimizer, lambda step: warmup_cosine(step, cfg.warmup_steps, self.max_steps, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- validation ---------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val = torch.zeros(2, dtype=torch.float64)  # (summed token loss, labelled tokens)
        self._val_skips = SkipCounter()

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        if batch.skipped:
            self._val_skips.merge(batch.skipped)
        if not batch.num_samples:  # a loader worker that skipped every sample: it brings only its skips
            return
        out = self.model(batch)
        self._val += torch.tensor([float(out.loss) * out.num_labels, out.num_labels], dtype=torch.float64)

    def on_validation_epoch_end(self) -> None:
        counts = torch.tensor([self._val_skips.skipped, self._val_skips.seen], dtype=torch.float64)
        total = self.trainer.strategy.reduce(torch.cat([self._val, counts]).to(self.device), reduce_op="sum")
        if float(total[3]) > 0:  # the skips reach this process with the batches (an empty one when none passed)
            self.log("val_skipped", float(total[2]), batch_size=1)
        if float(total[1]) > 0:
            self.log("val_loss", float(total[0] / total[1]), prog_bar=True, batch_size=1)
            return
        skips = SkipCounter()  # every rank's, as total says (all ranks take this branch: a collective call)
        for counts in gather_from_ranks(self._val_skips.as_dict()):
            skips.merge(counts)
        if self.trainer.is_global_zero:
            log.warning(
                "validation at step %d scored no labelled token, so val_loss is not logged: the validation "
                "shards gave no batch, or none with a labelled token (%s)",
                self.global_step,
                skips.summary(),
            )

    # --- checkpoints --------------------------------------------------------------------------------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Only the weights this stage trains (the frozen rest is rebuilt from the recipe)."""
        full = super().state_dict(*args, **kwargs)
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in full.items() if k in trainable}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mmadapter"] = {
            "stage": self.stage.name,
            "consumed_batches": self.global_step * self.trainer.accumulate_grad_batches,
            "counts": gather_from_ranks(self.counts.as_dict()),  # every rank's, in rank order, as rng
            "nonfinite_total": self.nonfinite_total,
            "rng": gather_rng_states(),  # every rank's, in rank order (this hook runs on every rank)
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("mmadapter", {})
        if state.get("stage", self.stage.name) != self.stage.name:
            raise ValueError(f"checkpoint is of stage {state['stage']!r}, not {self.stage.name!r}")
        if "counts" in state:
            self.counts = StageCounts.resumed(state["counts"], self.global_rank, self.trainer.world_size)
        elif "tokens" in state:  # written before counts were kept per rank: rank 0's, which rank 0 takes back
            self.counts = StageCounts.resumed([state], self.global_rank, self.trainer.world_size)
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        if "rng" in state:
            restore_rng_states(state["rng"], self.global_rank)

    def on_fit_end(self) -> None:
        # every rank runs this hook, as the gather needs, also when a resumed stage had no step left to train
        self.totals = self.counts.over_ranks()
