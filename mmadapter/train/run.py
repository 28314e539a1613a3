"""``mmadapter train``: run a recipe's stages on PyTorch Lightning into a run directory (DESIGN.md §6).

Run directory: the artefact at the top (``recipe.yaml``, ``adapter.safetensors``, …), ``stages/<name>/``
(the artefact after each stage), ``best/`` (best validation artefact, when validating), ``metrics.jsonl``,
``checkpoints/<stage>.ckpt`` (resume state) with ``checkpoints/state.json`` (finished stages) and
``checkpoints/recipe.yaml`` (the recipe it started with, which ``--resume`` must match), ``tb/``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, get_args

import lightning as L
import torch

from mmadapter.artefact import atomic_write, load_trained_weights, save_artefact
from mmadapter.config import (
    HIGHER_IS_BETTER,
    TASK_METRICS,
    DataConfig,
    Recipe,
    RecipeError,
    StageConfig,
    TrainConfig,
    load_recipe,
)
from mmadapter.data.pipeline import expand_shards
from mmadapter.data.skips import SkipCounter
from mmadapter.llm.causal_lm import checkpoint_activations
from mmadapter.model import MultimodalLM
from mmadapter.train.callbacks import BestArtefact, MetricsLog, PeriodicCheckpoint, TaskMetric
from mmadapter.train.checkpoint_io import SafeCheckpointIO
from mmadapter.train.data import stage_data, train_loader, val_loader
from mmadapter.train.module import StageModule
from mmadapter.train.resume import check_resumed_recipe, record_started_recipe

__all__ = ["add_arguments", "run", "train", "validate_for_training"]

log = logging.getLogger(__name__)


def validate_for_training(recipe: Recipe, cuda: bool | None = None) -> None:
    """Checks that need the machine: GPU-only strategies and precisions are rejected on CPU."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    problems = []
    if recipe.train.strategy in ("fsdp", "deepspeed") and not cuda:
        problems.append(("train.strategy", f"{recipe.train.strategy!r} needs CUDA GPUs; on CPU use 'auto' or 'ddp'"))
    if recipe.train.precision == "16-mixed" and not cuda:
        problems.append(("train.precision", "'16-mixed' needs a CUDA GPU; on CPU use '32-true' or 'bf16-mixed'"))
    for i, stage in enumerate(recipe.train.stages):
        if stage.init_from and not (Path(stage.init_from) / "adapter.safetensors").is_file():
            problems.append((f"train.stages.{i}.init_from", f"{stage.init_from} is not an mmadapter artefact"))
    if not recipe.data.train and not any(s.data and s.data.get("train") for s in recipe.train.stages):
        problems.append(("data.train", "no training shards: add [{shards: ..., weight: ...}]"))
    problems += _shard_problems(recipe)
    problems += _validation_problems(recipe.train, recipe.data)
    if problems:
        raise RecipeError(problems)


def _shard_problems(recipe: Recipe) -> list[tuple[str, str]]:
    """Local shards that do not exist, found before the model is built (remote URLs are not checked)."""
    problems: dict[str, str] = {}
    for j, stage in enumerate(recipe.train.stages):
        data = stage_data(recipe, stage)
        for kind in ("train", "val"):
            prefix = f"train.stages.{j}.data.{kind}" if stage.data and kind in stage.data else f"data.{kind}"
            for i, shard_set in enumerate(getattr(data, kind)):
                try:
                    expand_shards(shard_set.shards)
                except (FileNotFoundError, ValueError) as e:
                    problems.setdefault(f"{prefix}.{i}.shards", str(e))
    return list(problems.items())


def _validation_problems(train: TrainConfig, data: DataConfig) -> list[tuple[str, str]]:
    """A ``best_metric`` the run never logs (``best/`` would never be written) or a ``best_mode`` that keeps
    the worst score are errors; validation settings that do nothing are warnings."""
    validates = train.val_every is not None
    if validates and not data.val and not any(s.data and s.data.get("val") for s in train.stages):
        log.warning("train.val_every: no stage has validation shards (data.val), so the run never validates")
        validates = False
    for key in ("val_metric", "early_stopping_patience"):
        if getattr(train, key) is not None and not validates:
            log.warning("train.%s does nothing: the run never validates (train.val_every, data.val)", key)
    if not validates:
        return []
    logged = ["val_loss"] + ([f"val_{train.val_metric}"] if train.val_metric else [])
    metric = train.best_metric.removeprefix("val_")
    if train.best_metric not in logged:
        hint = f"; set train.val_metric: {metric}" if metric in get_args(TASK_METRICS) else ""
        return [
            (
                "train.best_metric",
                f"{train.best_metric!r} is not logged at validation{hint} (logged: {', '.join(logged)})",
            )
        ]
    if train.best_mode != ("max" if metric in HIGHER_IS_BETTER else "min"):
        better = "higher" if train.best_mode == "min" else "lower"
        return [
            ("train.best_mode", f"{train.best_mode!r} would keep the worst {train.best_metric} ({better} is better)")
        ]
    return []


def train(recipe: Recipe, run_dir: str | Path, resume: bool = False) -> Path:
    """Train every stage of ``recipe`` into ``run_dir``; returns the run directory.

    Raises:
        FileExistsError: ``run_dir`` already holds a run and ``resume`` is false.
        RecipeError: ``resume`` with a recipe other than the one the run started with.
    """
    validate_for_training(recipe)
    run_dir = Path(run_dir)
    state_path = run_dir / "checkpoints" / "state.json"
    # Lightning's DDP launcher re-runs this command in each extra process (with LOCAL_RANK set): only the
    # launching process judges whether the directory is free.
    launcher = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    existed = (run_dir / "checkpoints").exists()
    if launcher and not resume and existed:
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --run")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if launcher and existed:
        check_resumed_recipe(run_dir, recipe)
    elif launcher:
        record_started_recipe(run_dir, recipe)
    state = json.loads(state_path.read_text()) if resume and state_path.exists() else {}
    done: list[str] = state.get("completed", [])
    per_stage: dict[str, dict[str, Any]] = state.get("totals", {})  # steps, tokens, samples, skips, per stage
    uncounted = [name for name in done if name not in per_stage]
    if uncounted:
        log.warning("stage(s) %s finished before their counts were recorded: the summary leaves them out", uncounted)

    L.seed_everything(recipe.train.seed, workers=True, verbose=False)
    model = MultimodalLM.from_recipe(recipe)
    if recipe.train.activation_checkpointing:
        checkpoint_activations(model.llm)
    started, new_tokens = time.perf_counter(), 0
    is_zero = True
    for index, stage in enumerate(recipe.train.stages):
        if stage.name in done:
            load_trained_weights(model, run_dir / "stages" / stage.name)
            continue
        if stage.init_from:
            load_trained_weights(model, stage.init_from)
        trainer, module = _fit_stage(model, recipe, stage, index, run_dir, resume)
        is_zero = trainer.is_global_zero
        counts = module.totals
        assert counts is not None, "StageModule.on_fit_end sums the counts over ranks"
        per_stage[stage.name] = {"steps": trainer.global_step, "nonfinite": module.nonfinite_total} | counts.as_dict()
        new_tokens += counts.tokens - counts.resumed_tokens
        if is_zero:
            save_artefact(model, run_dir / "stages" / stage.name, _provenance(recipe, stage, trainer))
            done.append(stage.name)
            atomic_write(state_path, json.dumps({"completed": done, "totals": per_stage}).encode())
    if is_zero:
        save_artefact(model, run_dir, _provenance(recipe, None, None))
        _print_summary(run_dir, time.perf_counter() - started, per_stage, new_tokens)
    return run_dir


def _fit_stage(
    model: MultimodalLM, recipe: Recipe, stage: StageConfig, index: int, run_dir: Path, resume: bool
) -> tuple[L.Trainer, StageModule]:
    cfg = recipe.train
    names = model.set_trainable(stage.trainable)
    log.info("stage %s trains %d tensors in groups %s", stage.name, len(names), stage.trainable)
    max_steps = stage.max_steps or cfg.max_steps
    data = stage_data(recipe, stage)
    keys_log = run_dir / "sample_keys" if cfg.log_sample_keys else None
    module = StageModule(model, stage, cfg, max_steps, data.max_bad_fraction, keys_log)
    ckpt = run_dir / "checkpoints" / f"{stage.name}.ckpt"
    callbacks: list[L.Callback] = [
        MetricsLog(run_dir / "metrics.jsonl", stage.name, cfg.log_every),
        PeriodicCheckpoint(ckpt, cfg.checkpoint_every),
    ]
    if data.val and cfg.val_every and cfg.val_metric:
        callbacks.append(TaskMetric(data.val, cfg.val_metric, data.limits))
    if data.val and cfg.val_every:
        best = BestArtefact(run_dir / "best", cfg.best_metric, cfg.best_mode, _provenance(recipe, stage, None))
        callbacks.append(best)
        if cfg.early_stopping_patience:
            callbacks.append(
                L.pytorch.callbacks.EarlyStopping(
                    cfg.best_metric,
                    patience=cfg.early_stopping_patience,
                    mode=cfg.best_mode,
                    check_on_train_epoch_end=False,
                )
            )
    trainer = L.Trainer(
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=_strategy(cfg.strategy),
        precision=_precision(cfg.precision),
        max_steps=max_steps,
        accumulate_grad_batches=cfg.accumulate,
        gradient_clip_val=cfg.grad_clip,
        val_check_interval=cfg.val_every if data.val and cfg.val_every else None,
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.val_batches or 1.0,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.TensorBoardLogger(run_dir, name="tb", version=stage.name),
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        enable_checkpointing=False,
        use_distributed_sampler=False,
        log_every_n_steps=cfg.log_every,
        default_root_dir=run_dir,
    )
    resume_from = ckpt if resume and ckpt.is_file() else None
    consumed = torch.load(ckpt, weights_only=True)["mmadapter"]["consumed_batches"] if resume_from else 0
    seed = cfg.seed + 1000 * index
    loader = train_loader(model, data, seed, trainer.global_rank, trainer.world_size, skip_batches=consumed)
    val = val_loader(model, data, seed, trainer.global_rank, trainer.world_size) if cfg.val_every else None
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=val, ckpt_path=resume_from, weights_only=True)
    return trainer, module


def _strategy(name: str) -> Any:
    if name == "ddp":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # Batches without some modality leave that projector unused: let DDP expect it.
        return L.pytorch.strategies.DDPStrategy(process_group_backend=backend, find_unused_parameters=True)
    if name == "deepspeed":
        return "deepspeed_stage_2"
    return name  # "auto", "fsdp"


def _precision(name: str) -> str:
    if name == "auto":
        return "bf16-mixed" if torch.cuda.is_available() else "32-true"
    return name


def _provenance(recipe: Recipe, stage: StageConfig | None, trainer: L.Trainer | None) -> dict[str, Any]:
    """The shards that trained and validated ``stage`` (every stage's, with its own data overrides, for the
    run's artefact), each with the stages that read it, its size and a checksum; the stage's name, and its
    steps once ``trainer`` has trained it."""
    shards: dict[str, dict[str, Any]] = {}
    for st in [stage] if stage is not None else recipe.train.stages:
        data = stage_data(recipe, st)
        for s in data.train + data.val:
            for url in expand_shards(s.shards):
                if url not in shards:
                    shards[url] = {"url": url, "stages": []}
                    path = Path(url)
                    if path.is_file():
                        size, mtime = path.stat().st_size, path.stat().st_mtime_ns
                        shards[url] |= {"bytes": size, "sha256_head_tail": _head_tail_hash(url, size, mtime)}
                if st.name not in shards[url]["stages"]:
                    shards[url]["stages"].append(st.name)
    info: dict[str, Any] = {"shards": list(shards.values())}
    if stage is not None:
        info["stage"] = stage.name
    if stage is not None and trainer is not None:
        info["steps"] = trainer.global_step
    return info


@functools.cache
def _head_tail_hash(path: str, size: int, mtime_ns: int, block: int = 1 << 20) -> str:
    """sha256 of a shard's size, first and last MiB: cheap for terabytes, still catches swapped shards. Read
    once per file version (size and mtime key the cache), however many artefacts record the shard."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(block))
        f.seek(max(0, size - block))
        h.update(f.read(block))
    return h.hexdigest()


def _print_summary(run_dir: Path, seconds: float, per_stage: dict[str, dict[str, Any]], new_tokens: int) -> None:
    """The run's totals over every stage, this invocation's and those before a resume; the speed is this
    invocation's alone."""
    total = {k: sum(t.get(k, 0) for t in per_stage.values()) for k in ("steps", "tokens", "samples", "nonfinite")}
    skips = SkipCounter()
    for t in per_stage.values():
        skips.merge(SkipCounter.from_dict(t.get("skips", {})))
    nonfinite = f" ({total['nonfinite']} skipped: loss or gradient not finite)" if total["nonfinite"] else ""
    before = total["tokens"] - new_tokens
    resumed = f" ({before:,} of them before the resume; {new_tokens:,} in this invocation)" if before else ""
    print(
        f"trained {total['steps']} steps{nonfinite} on {total['samples']:,} samples, {total['tokens']:,} tokens"
        f"{resumed} in {seconds:.0f} s ({new_tokens / max(seconds, 1e-9):,.0f} tokens/s)\n"
        f"data read: {skips.summary()}\n"
        f"artefact: {run_dir}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides")
    parser.add_argument("--run", help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue a killed run in --run")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    try:
        train(recipe, args.run or Path("runs") / Path(args.recipe).stem, resume=args.resume)
    except RecipeError as e:
        if e.source is not None:
            raise
        raise RecipeError(e.problems, args.recipe, e.hint) from e  # found past loading: name the recipe too
    return 0
